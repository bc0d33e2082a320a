//! HubSpot CRM v3: search by `hs_lastmodifieddate` (stream 0), archived objects (stream 1) for
//! deletes, batch read for one record.
//!
//! Each page is a new search from the newest modification time the previous one read: the
//! results are sorted on that time alone (no tie-break) and cut from the records as they are, so
//! an offset would skip records whenever one already read is edited or records sharing a stamp
//! change places. This also keeps every search within HubSpot's 10,000-result window. Records
//! carrying the stamp a search starts at are read again, with the same event ids, so downstream
//! deduplicates them; `after` pages only through a run of records sharing one stamp.

use chrono::{DateTime, Utc};
use crm_sync_ingest::event;
use crm_sync_ingest::hubspot::webhook::OWNER_PROPERTY;
use crm_sync_proto::v1::{ChangeType, CrmEvent, FieldValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{Cursor, Page, PullClient, PullError, Pulled, Scope};

const MODIFIED: &str = "hs_lastmodifieddate";
const ID: &str = "hs_object_id";

/// The API's plural path segment of an object the webhooks name in the singular.
fn object_path(object: &str) -> String {
    match object {
        "company" => "companies".to_owned(),
        "deal" | "contact" | "ticket" | "product" | "quote" | "task" | "note" | "meeting"
        | "call" | "email" | "lead" => format!("{object}s"),
        "line_item" => "line_items".to_owned(),
        other => match other.strip_prefix("object_") {
            // A custom object as the webhooks name it (`object_2-1234567`): the API addresses
            // it by its type id.
            Some(type_id) if custom_type_id(type_id) => type_id.to_owned(),
            // Custom objects by their fully qualified name, as is.
            _ => other.to_owned(),
        },
    }
}

/// A custom object's type id: `2-` and digits.
pub(crate) fn custom_type_id(type_id: &str) -> bool {
    type_id
        .strip_prefix("2-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn properties(scope: &Scope) -> Vec<String> {
    let mut all = vec![
        MODIFIED.to_owned(),
        "createdate".to_owned(),
        OWNER_PROPERTY.to_owned(),
    ];
    for f in &scope.fields {
        if !all.contains(f) {
            all.push(f.clone());
        }
    }
    all
}

#[derive(Deserialize)]
struct Listing {
    results: Vec<Object>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    next: Option<Next>,
}

#[derive(Deserialize)]
struct Next {
    after: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    id: String,
    #[serde(default)]
    properties: Map<String, Value>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    archived_at: Option<String>,
}

pub(crate) async fn changes(
    client: &PullClient,
    scope: &Scope,
    cursor: &Cursor,
) -> Result<Page, PullError> {
    match (cursor.stream, &cursor.token) {
        (0, None) => search(client, scope, cursor).await,
        // A position saved by an earlier version, an offset among the records of `since`:
        // those records are read again, in id order (the same event ids, dropped downstream).
        (0, Some(_)) | (TIES, _) => ties(client, scope, cursor).await,
        (1, _) => archived(client, scope, cursor).await,
        (other, _) => Err(PullError::Invalid(format!("HubSpot stream {other}"))),
    }
}

/// The stream of the records sharing one modification time (`since`), in id order after the
/// cursor's token.
const TIES: u8 = 2;

/// Results are sorted on the modification time alone and every page is cut from the records as
/// they are at that moment: paging by offset skips a record whenever one already read is edited
/// (it moves to the end and those behind it move up one) or records sharing a stamp come in
/// another order. So each page is a new search from the newest time read; the records of that
/// time come again, with the same event ids. A page whose records all carry the search's own
/// start time cannot move it on: the records of that time are then read by id (see [`ties`]).
async fn search(client: &PullClient, scope: &Scope, cursor: &Cursor) -> Result<Page, PullError> {
    let filters = json!([{
        "propertyName": MODIFIED, "operator": "GTE",
        "value": cursor.since.timestamp_millis().to_string(),
    }]);
    let listing = searched(client, scope, filters, MODIFIED).await?;
    let (events, newest) = convert(client, scope, &listing.results, false)?;
    // Archived records are read from the pass's own start, not from where the search went on.
    let origin = cursor.origin.unwrap_or(cursor.since);
    let next = match (listing.paging.and_then(|p| p.next), newest) {
        (Some(_), Some(newest)) if newest > cursor.since => Cursor {
            origin: Some(origin),
            ..Cursor::start(newest)
        },
        (Some(_), _) => Cursor {
            stream: TIES,
            origin: Some(origin),
            ..Cursor::start(cursor.since)
        },
        (None, _) => archived_from(origin),
    };
    Ok(Page {
        events,
        next: Some(next),
        newest,
        delta: None,
    })
}

/// More records share the time `since` than a page holds (an import, a bulk edit): they are
/// read in id order, each page after the last id read, which no edit or re-indexing can shift;
/// then the search goes on after that time.
async fn ties(client: &PullClient, scope: &Scope, cursor: &Cursor) -> Result<Page, PullError> {
    let mut filters = vec![json!({
        "propertyName": MODIFIED, "operator": "EQ",
        "value": cursor.since.timestamp_millis().to_string(),
    })];
    if let Some(last) = cursor.token.as_deref().filter(|_| cursor.stream == TIES) {
        filters.push(json!({"propertyName": ID, "operator": "GT", "value": last}));
    }
    let listing = searched(client, scope, Value::Array(filters), ID).await?;
    let (events, newest) = convert(client, scope, &listing.results, false)?;
    let origin = cursor.origin.unwrap_or(cursor.since);
    let more = listing.paging.and_then(|p| p.next).is_some();
    let next = match listing.results.last() {
        Some(last) if more => Cursor {
            stream: TIES,
            token: Some(last.id.clone()),
            origin: Some(origin),
            ..Cursor::start(cursor.since)
        },
        _ => Cursor {
            origin: Some(origin),
            ..Cursor::start(cursor.since + chrono::Duration::milliseconds(1))
        },
    };
    Ok(Page {
        events,
        next: Some(next),
        newest,
        delta: None,
    })
}

/// Then the archived records, from the pass's own start.
fn archived_from(origin: DateTime<Utc>) -> Cursor {
    Cursor {
        stream: 1,
        ..Cursor::start(origin)
    }
}

/// One page of the search API: the records matching `filters` (one group), sorted on `sort`.
async fn searched(
    client: &PullClient,
    scope: &Scope,
    filters: Value,
    sort: &str,
) -> Result<Listing, PullError> {
    let body = json!({
        "filterGroups": [{"filters": filters}],
        "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
        "properties": properties(scope),
        "limit": client.page_size(200),
    });
    let path = object_path(&scope.object);
    let response = client
        .send("the HubSpot search API", |http, base| {
            http.post(format!("{base}/crm/v3/objects/{path}/search"))
                .json(&body)
        })
        .await?;
    if response.is_not_found() {
        return Err(PullError::Invalid(format!(
            "HubSpot object {:?}: the search API does not know it",
            scope.object
        )));
    }
    serde_json::from_str(&response.body).map_err(|e| client.garbage("a search result", e))
}

/// Archived objects cannot be searched: every archived one is listed, and those archived at
/// or after `since` become deletes.
async fn archived(client: &PullClient, scope: &Scope, cursor: &Cursor) -> Result<Page, PullError> {
    let limit = client.page_size(100).to_string();
    let path = object_path(&scope.object);
    let props = properties(scope).join(",");
    let response = client
        .send("the HubSpot objects API", |http, base| {
            let mut q = vec![
                ("archived", "true"),
                ("limit", limit.as_str()),
                ("properties", props.as_str()),
            ];
            if let Some(after) = &cursor.token {
                q.push(("after", after.as_str()));
            }
            http.get(format!("{base}/crm/v3/objects/{path}")).query(&q)
        })
        .await?;
    if response.is_not_found() {
        return Err(PullError::Invalid(format!(
            "HubSpot object {:?}: the objects API does not know it",
            scope.object
        )));
    }
    let listing: Listing = serde_json::from_str(&response.body)
        .map_err(|e| client.garbage("a list of archived objects", e))?;
    let recent: Vec<Object> = listing
        .results
        .into_iter()
        .filter(|o| {
            o.archived_at
                .as_deref()
                .and_then(event::parse_datetime)
                .is_some_and(|at| at >= cursor.since)
        })
        .collect();
    let (events, newest) = convert(client, scope, &recent, true)?;
    let next = listing.paging.and_then(|p| p.next).map(|n| Cursor {
        stream: 1,
        since: cursor.since,
        token: Some(n.after),
        delta: None,
        origin: None,
    });
    Ok(Page {
        events,
        next,
        newest,
        delta: None,
    })
}

pub(crate) async fn record(
    client: &PullClient,
    scope: &Scope,
    id: &str,
) -> Result<Option<CrmEvent>, PullError> {
    let path = object_path(&scope.object);
    let body = json!({"properties": properties(scope), "inputs": [{"id": id}]});
    let response = client
        .send("the HubSpot batch read API", |http, base| {
            http.post(format!("{base}/crm/v3/objects/{path}/batch/read"))
                .json(&body)
        })
        .await?;
    if response.is_not_found() {
        return Ok(None);
    }
    let listing: Listing = serde_json::from_str(&response.body)
        .map_err(|e| client.garbage("a batch read result", e))?;
    let found: Vec<Object> = listing.results.into_iter().filter(|o| o.id == id).collect();
    let (mut events, _) = convert(client, scope, &found, false)?;
    Ok(events.pop())
}

type Converted = (Vec<CrmEvent>, Option<DateTime<Utc>>);

fn convert(
    client: &PullClient,
    scope: &Scope,
    objects: &[Object],
    deleted: bool,
) -> Result<Converted, PullError> {
    let mut events = Vec::with_capacity(objects.len());
    let mut newest = None;
    for o in objects {
        let pulled = to_pulled(client, scope, o, deleted)?;
        newest = newest.max(Some(pulled.modified));
        events.push(client.event(pulled));
    }
    Ok((events, newest))
}

fn to_pulled(
    client: &PullClient,
    scope: &Scope,
    object: &Object,
    deleted: bool,
) -> Result<Pulled, PullError> {
    if !event::valid_record_id(&object.id) {
        return Err(client.garbage("a record", "a record without id"));
    }
    let prop = |name: &str| object.properties.get(name).and_then(Value::as_str);
    let stamp = if deleted {
        object.archived_at.as_deref()
    } else {
        prop(MODIFIED).or(object.updated_at.as_deref())
    };
    let modified = stamp
        .and_then(|s| {
            event::parse_datetime(s).or_else(|| s.parse::<i64>().ok().and_then(event::from_millis))
        })
        .ok_or_else(|| {
            client.garbage(
                "a record",
                format!("record {} has no modification time", object.id),
            )
        })?;
    let created = prop("createdate").and_then(event::parse_datetime);
    let change = match (deleted, created) {
        (true, _) => ChangeType::Deleted,
        (false, Some(c)) if c == modified => ChangeType::Created,
        _ => ChangeType::Updated,
    };
    // As the webhook connector writes property values: text, an empty value as null.
    let fields = object
        .properties
        .iter()
        .map(|(name, value)| (name.clone(), property(value)))
        .collect();
    Ok(Pulled {
        object: scope.object.clone(),
        id: object.id.clone(),
        change,
        modified,
        fields,
        owner: prop(OWNER_PROPERTY)
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned),
    })
}

fn property(value: &Value) -> FieldValue {
    match value {
        Value::Null => event::null(),
        Value::String(s) if s.is_empty() => event::null(),
        Value::String(s) => event::text(s.clone()),
        other => event::json_field(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_addressed_by_their_api_path() {
        assert_eq!(object_path("deal"), "deals");
        assert_eq!(object_path("company"), "companies");
        // A custom object as the webhooks name it, by its type id.
        assert_eq!(object_path("object_2-3508482"), "2-3508482");
        assert_eq!(object_path("p62515_cars"), "p62515_cars");
    }
}
