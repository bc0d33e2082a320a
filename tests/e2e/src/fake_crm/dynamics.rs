//! Dataverse Web API v9.2: entity collections with `$filter=modifiedon ge …`, `$select`,
//! `odata.maxpagesize` and `@odata.nextLink`; one row by id.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{FakeRecord, Request, Shared, json as reply, open_locator, parse_time, sorted, take};

const ROOT: &str = "/api/data/v9.2/";

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn object_of(set: &str) -> String {
    if let Some(stem) = set.strip_suffix("ies") {
        return format!("{stem}y");
    }
    if let Some(stem) = set.strip_suffix("sses") {
        return format!("{stem}ss");
    }
    set.strip_suffix('s').unwrap_or(set).to_owned()
}

pub fn answer(shared: &Shared, request: &Request) -> Response {
    let odata = request
        .headers
        .get("odata-version")
        .and_then(|v| v.to_str().ok());
    if odata != Some("4.0") {
        return error(StatusCode::BAD_REQUEST, "OData-Version 4.0 is required");
    }
    let Some(rest) = request.path.strip_prefix(ROOT) else {
        return error(StatusCode::NOT_FOUND, "Resource not found");
    };
    if request.method != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "GET only");
    }
    let page_size = request
        .headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .and_then(|p| p.split("odata.maxpagesize=").nth(1))
        .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(5000);
    if let Some((set, id)) = rest.strip_suffix(')').and_then(|r| r.split_once('(')) {
        let object = object_of(set);
        let records = shared.records.lock().unwrap();
        let select = select(request);
        return match records.get(&(object.clone(), id.to_owned())) {
            Some(r) if r.deleted.is_none() => {
                reply(StatusCode::OK, Value::Object(row(&object, id, r, &select)))
            }
            _ => error(StatusCode::NOT_FOUND, "Entity Does Not Exist"),
        };
    }
    if let Some(token) = request.query.get("$skiptoken") {
        let (locator, offset) = token.split_once('-').unwrap_or((token, "0"));
        let offset = offset.parse().unwrap_or(0);
        return page(shared, request, rest, locator.to_owned(), offset, page_size);
    }
    let object = object_of(rest);
    let since = match request.query.get("$filter") {
        Some(f) => match f.strip_prefix("modifiedon ge ").and_then(parse_time) {
            Some(t) => Some(t),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the fake only filters on modifiedon ge",
                );
            }
        },
        None => None,
    };
    let select = select(request);
    let rows: Vec<Value> = sorted(shared, &object)
        .into_iter()
        .filter(|(_, r)| r.deleted.is_none())
        .filter(|(_, r)| since.is_none_or(|s| r.modified.timestamp() >= s.timestamp()))
        .map(|(id, r)| Value::Object(row(&object, &id, &r, &select)))
        .collect();
    let locator = open_locator(shared, rows);
    page(shared, request, rest, locator, 0, page_size)
}

fn select(request: &Request) -> Vec<String> {
    request
        .query
        .get("$select")
        .map(|s| s.split(',').map(|f| f.trim().to_owned()).collect())
        .unwrap_or_default()
}

fn error(status: StatusCode, message: &str) -> Response {
    reply(
        status,
        json!({"error": {"code": "0x80040217", "message": message}}),
    )
}

fn row(object: &str, id: &str, r: &FakeRecord, select: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("@odata.etag".into(), json!("W/\"1234567\""));
    for column in select {
        let value = match column.as_str() {
            c if c == format!("{object}id") => json!(id),
            "modifiedon" => json!(iso(r.modified)),
            "createdon" => json!(iso(r.created)),
            other => r.fields.get(other).cloned().unwrap_or(Value::Null),
        };
        out.insert(column.clone(), value);
    }
    // Formatted values of the fields the test gave them for (`x@OData…FormattedValue`).
    for (k, v) in &r.fields {
        if k.contains("@OData.Community.Display.V1.FormattedValue") {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn page(
    shared: &Shared,
    request: &Request,
    set: &str,
    locator: String,
    offset: usize,
    size: usize,
) -> Response {
    let Some((rows, more)) = take(shared, &locator, offset, size) else {
        return error(StatusCode::BAD_REQUEST, "invalid $skiptoken");
    };
    let mut body = json!({
        "@odata.context": format!("{}{ROOT}$metadata#{set}", request.base),
        "value": rows,
    });
    if more {
        body["@odata.nextLink"] = json!(format!(
            "{}{ROOT}{set}?$skiptoken={locator}-{}",
            request.base,
            offset + size
        ));
    }
    reply(StatusCode::OK, body)
}
