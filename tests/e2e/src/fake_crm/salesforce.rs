//! Salesforce REST v62.0: `queryAll`, query locators, `sobjects`, `Sforce-Limit-Info`, and the
//! errors of fields (400 `INVALID_FIELD`) and objects (403 `INSUFFICIENT_ACCESS_OR_READONLY`)
//! the API user may not read.

use std::time::Instant;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{FakeRecord, Request, Shared, json as reply, open_locator, parse_time, sorted, take};

const ROOT: &str = "/services/data/v62.0";

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

pub fn answer(shared: &Shared, request: &Request) -> Response {
    let usage = {
        let mut usage = shared.api_usage.lock().unwrap();
        usage.0 += 1;
        *usage
    };
    let mut response = if usage.0 > usage.1 {
        reply(
            StatusCode::FORBIDDEN,
            json!([{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]),
        )
    } else {
        route(shared, request)
    };
    response.headers_mut().insert(
        "sforce-limit-info",
        format!("api-usage={}/{}", usage.0, usage.1)
            .parse()
            .unwrap(),
    );
    response
}

fn route(shared: &Shared, request: &Request) -> Response {
    let Some(rest) = request.path.strip_prefix(ROOT) else {
        return not_found();
    };
    let batch = request
        .headers
        .get("sforce-query-options")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("batchSize="))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(2000)
        .clamp(1, 2000);
    if request.method == Method::GET && rest == "/queryAll" {
        let Some(q) = request.query.get("q") else {
            return malformed("q is missing");
        };
        return match query(shared, q) {
            Ok(rows) => page(shared, open(shared, rows), 0, batch),
            Err(Refused::Malformed(problem)) => malformed(&problem),
            Err(Refused::Denied) => reply(
                StatusCode::FORBIDDEN,
                json!([{
                    "errorCode": "INSUFFICIENT_ACCESS_OR_READONLY",
                    "message": "insufficient access rights on object id",
                }]),
            ),
            Err(Refused::Hidden { object, field }) => reply(
                StatusCode::BAD_REQUEST,
                json!([{
                    "errorCode": "INVALID_FIELD",
                    "message": format!("No such column '{field}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."),
                }]),
            ),
        };
    }
    if let Some(locator) = rest.strip_prefix("/query/") {
        let (id, offset) = locator.split_once('-').unwrap_or((locator, "0"));
        expire_idle(shared, id);
        return page(shared, id.to_owned(), offset.parse().unwrap_or(0), batch);
    }
    if let Some(tail) = rest.strip_prefix("/sobjects/") {
        let mut parts = tail.splitn(2, '/');
        let (object, id) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let object = &spelled(shared, object);
        let fields: Vec<String> = request
            .query
            .get("fields")
            .map(|f| f.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default();
        let records = shared.records.lock().unwrap();
        return match records.get(&(object.to_owned(), id.to_owned())) {
            Some(r) if r.deleted.is_none() => {
                reply(StatusCode::OK, Value::Object(row(object, id, r, &fields)))
            }
            _ => not_found(),
        };
    }
    not_found()
}

/// Salesforce keeps at most this many query locators open per user; opening another closes
/// the least recently used.
const OPEN_LOCATORS: usize = 10;

fn open(shared: &Shared, rows: Vec<Value>) -> String {
    let id = open_locator(shared, rows);
    let mut used = shared.locator_used.lock().unwrap();
    used.insert(id.clone(), Instant::now());
    while used.len() > OPEN_LOCATORS {
        let Some(oldest) = used
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(id, _)| id.clone())
        else {
            break;
        };
        used.remove(&oldest);
        shared.locators.lock().unwrap().remove(&oldest);
    }
    id
}

/// Closes the locator if it was left unused too long; else marks it used now.
fn expire_idle(shared: &Shared, id: &str) {
    let idle = *shared.locator_idle.lock().unwrap();
    let mut used = shared.locator_used.lock().unwrap();
    let expired = used.get(id).is_some_and(|at| at.elapsed() >= idle);
    if expired {
        used.remove(id);
        shared.locators.lock().unwrap().remove(id);
    } else if let Some(at) = used.get_mut(id) {
        *at = Instant::now();
    }
}

fn not_found() -> Response {
    reply(
        StatusCode::NOT_FOUND,
        json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]),
    )
}

fn malformed(problem: &str) -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        json!([{"errorCode": "MALFORMED_QUERY", "message": problem}]),
    )
}

/// Why a query is refused.
enum Refused {
    Malformed(String),
    /// A field the API user may not read: to them it does not exist.
    Hidden {
        object: String,
        field: String,
    },
    /// An object the API user has no read permission on.
    Denied,
}

impl From<&str> for Refused {
    fn from(problem: &str) -> Refused {
        Refused::Malformed(problem.to_owned())
    }
}

impl From<String> for Refused {
    fn from(problem: String) -> Refused {
        Refused::Malformed(problem)
    }
}

/// `SELECT a, b FROM X WHERE SystemModstamp >= t ORDER BY SystemModstamp ASC, Id ASC`.
fn query(shared: &Shared, soql: &str) -> Result<Vec<Value>, Refused> {
    let upper = soql.to_ascii_uppercase();
    let from = upper.find(" FROM ").ok_or("no FROM")?;
    let fields: Vec<String> = soql["SELECT ".len()..from]
        .split(',')
        .map(|f| f.trim().to_owned())
        .collect();
    let after_from = &soql[from + 6..];
    let object = &spelled(
        shared,
        after_from.split_whitespace().next().ok_or("no object")?,
    );
    if shared.denied.lock().unwrap().contains(object) {
        return Err(Refused::Denied);
    }
    let hidden = shared.hidden.lock().unwrap().clone();
    if let Some(field) = fields
        .iter()
        .find(|f| hidden.contains(&(object.to_owned(), (*f).clone())))
    {
        return Err(Refused::Hidden {
            object: object.to_owned(),
            field: field.clone(),
        });
    }
    let since = soql
        .split("SystemModstamp >= ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .map(|t| parse_time(t).ok_or(format!("bad date-time {t}")))
        .transpose()?;
    if !upper.contains("ORDER BY SYSTEMMODSTAMP") {
        return Err("the fake only answers queries ordered by SystemModstamp".into());
    }
    Ok(sorted(shared, object)
        .into_iter()
        .filter(|(_, r)| since.is_none_or(|s| r.modified >= s))
        .map(|(id, r)| Value::Object(row(object, &id, &r, &fields)))
        .collect())
}

/// Salesforce matches object names ignoring case and answers with its own spelling.
fn spelled(shared: &Shared, object: &str) -> String {
    let records = shared.records.lock().unwrap();
    records
        .keys()
        .map(|(o, _)| o)
        .find(|o| o.eq_ignore_ascii_case(object))
        .map_or_else(|| object.to_owned(), Clone::clone)
}

fn row(object: &str, id: &str, r: &FakeRecord, fields: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({"type": object, "url": format!("{ROOT}/sobjects/{object}/{id}")}),
    );
    for f in fields {
        let value = match f.as_str() {
            "Id" => json!(id),
            "IsDeleted" => json!(r.deleted.is_some()),
            "SystemModstamp" | "LastModifiedDate" => json!(stamp(r.modified)),
            "CreatedDate" => json!(stamp(r.created)),
            other => r.fields.get(other).cloned().unwrap_or(Value::Null),
        };
        out.insert(f.clone(), value);
    }
    out
}

fn page(shared: &Shared, locator: String, offset: usize, batch: usize) -> Response {
    let total = shared.locators.lock().unwrap().get(&locator).map(Vec::len);
    let Some((records, more)) = take(shared, &locator, offset, batch) else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!([{"errorCode": "INVALID_QUERY_LOCATOR", "message": "invalid query locator"}]),
        );
    };
    let mut body = json!({
        "totalSize": total.unwrap_or(0),
        "done": !more,
        "records": records,
    });
    if more {
        body["nextRecordsUrl"] = json!(format!("{ROOT}/query/{locator}-{}", offset + batch));
    }
    reply(StatusCode::OK, body)
}
