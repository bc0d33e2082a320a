//! Dataverse Web API v9.2: entity collections with `$filter=modifiedon ge …`, `$select`,
//! `$orderby`, `odata.maxpagesize` and `@odata.nextLink` (a paging cookie of the last row's
//! sort values, so that a sort without the primary key skips rows sharing a second); one row by id; change tracking
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
    let object = object_of(rest);
    if let Some(token) = request.query.get("$skiptoken") {
        if let Some(cookie) = token.strip_prefix("cookie:") {
            return query(shared, request, rest, &object, Some(cookie));
        }
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
    if tracked {
        return track(shared, request, rest, &object, page_size);
    }
    query(shared, request, rest, &object, None)
}

/// A query's page, read from the rows as they are now. Like Dataverse's paging cookie, the
/// next link names only the last row's `$orderby` values: the next page starts after them. Rows
/// sharing a `modifiedon` second with the last one are skipped unless the primary key orders
/// them too: Dataverse's paging needs a unique ordering.
fn query(
    shared: &Shared,
    request: &Request,
    set: &str,
    object: &str,
    cookie: Option<&str>,
) -> Response {
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
    let by_id = match request.query.get("$orderby").map(String::as_str) {
        None | Some("modifiedon asc") => false,
        Some(o) if o == format!("modifiedon asc,{object}id asc") => true,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the fake orders by modifiedon, then the primary key",
            );
        }
    };
    // (second, id) of the last row of the previous page.
    let after: Option<(i64, &str)> = cookie.and_then(|c| {
        let (second, id) = c.split_once(':')?;
        Some((second.parse().ok()?, id))
    });
    let select = select(request);
    let size = page_size(request);
    let mut rows: Vec<(String, FakeRecord)> = sorted(shared, object)
        .into_iter()
        .filter(|(_, r)| r.deleted.is_none())
        // `modifiedon` is kept to the second.
        .filter(|(_, r)| since.is_none_or(|s| second(r) >= s))
        .filter(|(id, r)| {
            after.is_none_or(|(last, last_id)| {
                let at = second(r).timestamp();
                at > last || (by_id && at == last && id.as_str() > last_id)
            })
        })
        .collect();
    if by_id {
        rows.sort_by(|a, b| second(&a.1).cmp(&second(&b.1)).then(a.0.cmp(&b.0)));
    }
    let more = rows.len() > size;
    rows.truncate(size);
    let mut body = json!({
        "@odata.context": format!("{}{ROOT}$metadata#{set}", request.base),
        "value": rows.iter().map(|(id, r)| Value::Object(row(object, id, r, &select))).collect::<Vec<_>>(),
    });
    if let (true, Some((id, r))) = (more, rows.last()) {
        let mut next = reqwest::Url::parse(&format!("{}{ROOT}{set}", request.base)).unwrap();
        for (k, v) in &request.query {
            if k != "$skiptoken" {
                next.query_pairs_mut().append_pair(k, v);
            }
        }
        let last_id = if by_id { id.as_str() } else { "" };
        let cookie = format!("cookie:{}:{last_id}", second(r).timestamp());
        next.query_pairs_mut().append_pair("$skiptoken", &cookie);
        body["@odata.nextLink"] = json!(next.to_string());
    }
    reply(StatusCode::OK, body)
}

/// A row's `modifiedon` as Dataverse keeps it: to the second.
fn second(r: &FakeRecord) -> DateTime<Utc> {
    DateTime::from_timestamp(r.modified.timestamp(), 0).unwrap_or(r.modified)
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
