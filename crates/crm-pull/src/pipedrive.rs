//! Pipedrive API v2: list endpoints with `updated_since`, sorted by `update_time`, cursor paging
//! (stream 0); deals deleted in the last 30 days with `status=deleted` (stream 1); one record
//! by id.

use chrono::{DateTime, SecondsFormat, Utc};
use crm_sync_ingest::event;
use crm_sync_ingest::pipedrive::webhook::flatten;
use crm_sync_proto::v1::{ChangeType, CrmEvent};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{Cursor, Page, PullClient, PullError, Pulled, Scope};

fn object_path(object: &str) -> Result<&'static str, PullError> {
    Ok(match object {
        "deal" => "deals",
        "person" => "persons",
        "organization" => "organizations",
        "activity" => "activities",
        "product" => "products",
        other => {
            return Err(PullError::Invalid(format!(
                "Pipedrive object {other:?}: no v2 list endpoint"
            )));
        }
    })
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    success: Option<bool>,
    data: Option<T>,
    #[serde(default)]
    additional_data: Option<Additional>,
}

#[derive(Deserialize)]
struct Additional {
    #[serde(default)]
    next_cursor: Option<String>,
}

pub(crate) async fn changes(
    client: &PullClient,
    scope: &Scope,
    cursor: &Cursor,
) -> Result<Page, PullError> {
    let path = object_path(&scope.object)?;
    let deleted = match (cursor.stream, scope.object.as_str()) {
        (0, _) => false,
        (1, "deal") => true,
        (other, _) => return Err(PullError::Invalid(format!("Pipedrive stream {other}"))),
    };
    let since = cursor.since.to_rfc3339_opts(SecondsFormat::Secs, true);
    let limit = client.page_size(500).to_string();
    let response = client
        .send("the Pipedrive list API", |http, base| {
            let mut q = vec![
                ("updated_since", since.as_str()),
                ("sort_by", "update_time"),
                ("sort_direction", "asc"),
                ("limit", limit.as_str()),
            ];
            if deleted {
                q.push(("status", "deleted"));
            }
            if let Some(token) = &cursor.token {
                q.push(("cursor", token.as_str()));
            }
            http.get(format!("{base}/api/v2/{path}")).query(&q)
        })
        .await?;
    if response.is_not_found() {
        return Err(client.garbage("a list of records", "404"));
    }
    let envelope: Envelope<Vec<Map<String, Value>>> =
        serde_json::from_str(&response.body).map_err(|e| client.garbage("a list of records", e))?;
    if envelope.success == Some(false) {
        return Err(client.garbage("a list of records", "success: false"));
    }
    let records = envelope
        .data
        .ok_or_else(|| client.garbage("a list of records", "no data"))?;
    let mut events = Vec::with_capacity(records.len());
    let mut newest: Option<DateTime<Utc>> = None;
    for record in &records {
        let pulled = to_pulled(client, scope, record, deleted)?;
        newest = newest.max(Some(pulled.modified));
        events.push(client.event(pulled));
    }
    let token = envelope
        .additional_data
        .and_then(|a| a.next_cursor)
        .filter(|c| !c.is_empty());
    let next = match token {
        Some(token) => Some(Cursor {
            stream: cursor.stream,
            since: cursor.since,
            token: Some(token),
            delta: None,
            origin: None,
        }),
        None if cursor.stream == 0 && scope.object == "deal" => Some(Cursor {
            stream: 1,
            since: cursor.since,
            token: None,
            delta: None,
            origin: None,
        }),
        None => None,
    };
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
    let path = object_path(&scope.object)?;
    let response = client
        .send("the Pipedrive record API", |http, base| {
            http.get(format!("{base}/api/v2/{path}/{id}"))
        })
        .await?;
    if response.is_not_found() {
        return Ok(None);
    }
    let envelope: Envelope<Map<String, Value>> =
        serde_json::from_str(&response.body).map_err(|e| client.garbage("a record", e))?;
    let Some(record) = envelope.data else {
        return Ok(None);
    };
    let deleted = record.get("is_deleted").and_then(Value::as_bool) == Some(true);
    Ok(Some(
        client.event(to_pulled(client, scope, &record, deleted)?),
    ))
}

fn to_pulled(
    client: &PullClient,
    scope: &Scope,
    record: &Map<String, Value>,
    deleted: bool,
) -> Result<Pulled, PullError> {
    let id = record
        .get("id")
        .and_then(event::id_text)
        .filter(|id| event::valid_record_id(id))
        .ok_or_else(|| client.garbage("a record", "a record without id"))?;
    let date = |name: &str| {
        record
            .get(name)
            .and_then(Value::as_str)
            .and_then(event::parse_datetime)
    };
    let modified = date("update_time")
        .ok_or_else(|| client.garbage("a record", format!("record {id} has no update_time")))?;
    let deleted = deleted || record.get("is_deleted").and_then(Value::as_bool) == Some(true);
    let change = match (deleted, date("add_time")) {
        (true, _) => ChangeType::Deleted,
        (false, Some(added)) if added == modified => ChangeType::Created,
        _ => ChangeType::Updated,
    };
    Ok(Pulled {
        object: scope.object.clone(),
        id,
        change,
        modified,
        fields: flatten(record),
        owner: record.get("owner_id").and_then(event::id_text),
    })
}
