//! Dataverse Web API v9.2: entity collections with `$filter=modifiedon ge …`, `$select`,
//! `odata.maxpagesize` and `@odata.nextLink`; one row by id; change tracking
//! (`Prefer: odata.track-changes`): a tracked answer's last page carries an `@odata.deltaLink`
//! (`$deltatoken=<ms>`), which lists the rows changed since and the deleted ones as
//! `$deletedEntity` entries.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{
    FakeRecord, Request, Shared, json as reply, next_stamp, open_locator, parse_time, sorted, take,
};

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
    let page_size = page_size(request);
    if let Some((set, id)) = rest.strip_suffix(')').and_then(|r| r.split_once('(')) {
        return one_row(shared, request, set, id);
    }
    let tracked = request
        .headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.contains("odata.track-changes"));
    if let Some(token) = request.query.get("$skiptoken") {
        let (locator, offset) = token.split_once('-').unwrap_or((token, "0"));
        let offset = offset.parse().unwrap_or(0);
        let delta = request.query.get("$trackedat").filter(|_| tracked).cloned();
        let at = Page {
            locator: locator.to_owned(),
            offset,
            size: page_size,
            delta,
        };
        return page(shared, request, rest, at);
    }
    let object = object_of(rest);
    if tracked {
        return track(shared, request, rest, &object, page_size);
    }
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
    let at = Page {
        locator,
        offset: 0,
        size: page_size,
        delta: None,
    };
    page(shared, request, rest, at)
}

/// `Prefer: odata.maxpagesize=N`, 5,000 without it.
fn page_size(request: &Request) -> usize {
    request
        .headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .and_then(|p| p.split("odata.maxpagesize=").nth(1))
        .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(5000)
}

/// `<set>(<id>)`: one live row.
fn one_row(shared: &Shared, request: &Request, set: &str, id: &str) -> Response {
    let object = object_of(set);
    let records = shared.records.lock().unwrap();
    let select = select(request);
    match records.get(&(object.clone(), id.to_owned())) {
        Some(r) if r.deleted.is_none() => {
            reply(StatusCode::OK, Value::Object(row(&object, id, r, &select)))
        }
        _ => error(StatusCode::NOT_FOUND, "Entity Does Not Exist"),
    }
}

/// A tracked query: every live row (no `$deltatoken`), or what changed since the token.
fn track(shared: &Shared, request: &Request, set: &str, object: &str, size: usize) -> Response {
    if shared.untracked.lock().unwrap().contains(object) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Change tracking is not enabled for the entity '{object}'."),
        );
    }
    let since = match request.query.get("$deltatoken") {
        Some(token) => match token.parse().ok().and_then(DateTime::from_timestamp_millis) {
            Some(t) => Some(t),
            None => return error(StatusCode::BAD_REQUEST, "invalid $deltatoken"),
        },
        None => None,
    };
    // Issued before the rows are read: a change made while the answer is paged is in the next.
    let issued = next_stamp(shared).timestamp_millis().to_string();
    let select = select(request);
    let base = format!("{}{ROOT}$metadata#{set}/$deletedEntity", request.base);
    let rows: Vec<Value> = sorted(shared, object)
        .into_iter()
        .filter_map(|(id, r)| match (since, r.deleted) {
            (None, None) => Some(Value::Object(row(object, &id, &r, &select))),
            (None, Some(_)) => None,
            (Some(s), Some(d)) => {
                (d > s).then(|| json!({"@odata.context": base, "id": id, "reason": "deleted"}))
            }
            (Some(s), None) => {
                (r.modified > s).then(|| Value::Object(row(object, &id, &r, &select)))
            }
        })
        .collect();
    let locator = open_locator(shared, rows);
    let at = Page {
        locator,
        offset: 0,
        size,
        delta: Some(issued),
    };
    page(shared, request, set, at)
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

/// Where a page of an open answer is, and the delta token a tracked answer ends with.
struct Page {
    locator: String,
    offset: usize,
    size: usize,
    delta: Option<String>,
}

fn page(shared: &Shared, request: &Request, set: &str, at: Page) -> Response {
    let Page {
        locator,
        offset,
        size,
        delta,
    } = at;
    let Some((rows, more)) = take(shared, &locator, offset, size) else {
        return error(StatusCode::BAD_REQUEST, "invalid $skiptoken");
    };
    let mut body = json!({
        "@odata.context": format!("{}{ROOT}$metadata#{set}", request.base),
        "value": rows,
    });
    let tracked = delta
        .as_ref()
        .map(|d| format!("&$trackedat={d}"))
        .unwrap_or_default();
    if more {
        body["@odata.nextLink"] = json!(format!(
            "{}{ROOT}{set}?$skiptoken={locator}-{}{tracked}",
            request.base,
            offset + size
        ));
    } else if let Some(delta) = delta {
        body["@odata.deltaLink"] =
            json!(format!("{}{ROOT}{set}?$deltatoken={delta}", request.base));
    }
    reply(StatusCode::OK, body)
}
