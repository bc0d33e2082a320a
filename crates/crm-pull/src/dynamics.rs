//! Dataverse Web API v9.2: `$filter=modifiedon ge t` (`t` to the second, as `modifiedon` is
//! kept: a pass going on from a stamp reads all of its second again), `$select`,
//! `$orderby=modifiedon asc,{table}id asc` (a unique order, which paging needs),
//! `@odata.nextLink` paging, `/{set}({id})` for one record.
//!
//! The Web API writes lookups as `_{name}_value`; the webhooks' `RemoteExecutionContext` names
//! them `{name}` (the referenced GUID), and formatted values get the same annotation suffix, so
//! pulled records are renamed to read like webhooks. Dates are written as the webhook connector
//! writes them (RFC 3339 with milliseconds). Deletes come from change tracking (stream 1, in
//! `tracking`).

mod tracking;

use chrono::{DateTime, SecondsFormat, Utc};
use crm_sync_ingest::dynamics::mapping::{FORMATTED_SUFFIX, OWNER_ATTRIBUTE};
use crm_sync_ingest::event;
use crm_sync_proto::v1::{ChangeType, CrmEvent, FieldValue};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{Cursor, Page, PullClient, PullError, Pulled, Scope};

const API: &str = "/api/data/v9.2";

/// The entity set of a table: Dataverse pluralises the logical name (`opportunity` →
/// `opportunities`, `account` → `accounts`, `new_invoice` → `new_invoices`).
fn entity_set(logical: &str) -> String {
    if let Some(stem) = logical.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    if logical.ends_with('s') || logical.ends_with('x') || logical.ends_with("ch") {
        return format!("{logical}es");
    }
    format!("{logical}s")
}

/// `$select` names: lookups (the owner, and fields the caller names as such) as `_x_value`.
fn select(scope: &Scope) -> String {
    let id = format!("{}id", scope.object);
    let mut names = vec![
        id.clone(),
        "modifiedon".to_owned(),
        "createdon".to_owned(),
        format!("_{OWNER_ATTRIBUTE}_value"),
    ];
    for f in &scope.fields {
        let name = if lookup(f) {
            format!("_{f}_value")
        } else {
            f.clone()
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(",")
}

/// Lookup columns every table has; other lookups can be named `_x_value` by the workflows.
fn lookup(field: &str) -> bool {
    matches!(
        field,
        "ownerid"
            | "owninguser"
            | "owningteam"
            | "owningbusinessunit"
            | "customerid"
            | "parentaccountid"
            | "parentcontactid"
            | "createdby"
            | "modifiedby"
    )
}

#[derive(Deserialize)]
struct Collection {
    value: Vec<Map<String, Value>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

fn prefer(page_size: u32) -> String {
    format!(
        "odata.maxpagesize={page_size},odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\""
    )
}

pub(crate) async fn changes(
    client: &PullClient,
    scope: &Scope,
    cursor: &Cursor,
) -> Result<Page, PullError> {
    match cursor.stream {
        0 => {}
        1 => return tracking::deletes(client, scope, cursor).await,
        other => return Err(PullError::Invalid(format!("Dataverse stream {other}"))),
    }
    let response = request_page(client, scope, cursor).await?;
    if response.is_not_found() {
        return Err(PullError::Invalid(format!(
            "Dataverse table {:?}: the Web API does not know its entity set",
            scope.object
        )));
    }
    let page: Collection = serde_json::from_str(&response.body)
        .map_err(|e| client.garbage("an entity collection", e))?;
    let mut events = Vec::with_capacity(page.value.len());
    let mut newest: Option<DateTime<Utc>> = None;
    for row in &page.value {
        let pulled = to_pulled(client, scope, row)?;
        newest = newest.max(Some(pulled.modified));
        events.push(client.event(pulled));
    }
    if let Some(link) = &page.next_link
        && !link.contains(API)
    {
        return Err(client.garbage("an entity collection", "@odata.nextLink"));
    }
    let since = newest.unwrap_or(cursor.since);
    // Then the deletes, from change tracking, unless there is no position to read them from and
    // none is wanted.
    let next = match page.next_link {
        Some(link) => Some((0, Some(link))),
        None if cursor.delta.is_some() || scope.establish_tracking => Some((1, None)),
        None => None,
    }
    .map(|(stream, token)| Cursor {
        stream,
        since,
        token,
        delta: cursor.delta.clone(),
        origin: None,
    });
    Ok(Page {
        events,
        next,
        newest,
        delta: None,
    })
}

/// The next page: the link Dataverse gave, or the query from the cursor's time.
async fn request_page(
    client: &PullClient,
    scope: &Scope,
    cursor: &Cursor,
) -> Result<crm_sync_crm_directory::ApiResponse, PullError> {
    let page_size = client.page_size(5000);
    let response = match &cursor.token {
        Some(link) => {
            // Only the path of the link is followed, always on the account's own API root.
            let path = link
                .find(API)
                .map(|at| &link[at..])
                .ok_or_else(|| client.garbage("an entity collection", "@odata.nextLink"))?;
            client
                .send("the Dataverse Web API", |http, base| {
                    http.get(format!("{base}{path}"))
                        .header("Prefer", prefer(page_size))
                })
                .await?
        }
        None => {
            let filter = format!(
                "modifiedon ge {}",
                cursor.since.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
            let set = entity_set(&scope.object);
            let fields = select(scope);
            let order = order_by(scope);
            client
                .send("the Dataverse Web API", |http, base| {
                    http.get(format!("{base}{API}/{set}"))
                        .query(&[
                            ("$select", fields.as_str()),
                            ("$filter", filter.as_str()),
                            ("$orderby", order.as_str()),
                        ])
                        .header("Prefer", prefer(page_size))
                })
                .await?
        }
    };
    Ok(response)
}

/// `modifiedon` is kept to the second and many rows share one: Dataverse's paging cookie
/// names the last row's sort values, so without the primary key as the tie-break the rows of
/// a second cut by a page boundary are skipped: paging needs a unique ordering.
fn order_by(scope: &Scope) -> String {
    format!("modifiedon asc,{}id asc", scope.object)
}

pub(crate) async fn record(
    client: &PullClient,
    scope: &Scope,
    id: &str,
) -> Result<Option<CrmEvent>, PullError> {
    let set = entity_set(&scope.object);
    let fields = select(scope);
    let response = client
        .send("the Dataverse Web API", |http, base| {
            http.get(format!("{base}{API}/{set}({id})"))
                .query(&[("$select", fields.as_str())])
                .header("Prefer", prefer(1))
        })
        .await?;
    if response.is_not_found() {
        return Ok(None);
    }
    let row: Map<String, Value> =
        serde_json::from_str(&response.body).map_err(|e| client.garbage("an entity", e))?;
    Ok(Some(client.event(to_pulled(client, scope, &row)?)))
}

/// A Web API column name as the webhook connector names the attribute.
fn webhook_name(column: &str) -> Option<String> {
    if let Some((name, annotation)) = column.split_once('@') {
        let suffix = format!("@{annotation}");
        if suffix != FORMATTED_SUFFIX {
            return None;
        }
        return Some(format!("{}{FORMATTED_SUFFIX}", webhook_name(name)?));
    }
    Some(
        column
            .strip_prefix('_')
            .and_then(|c| c.strip_suffix("_value"))
            .unwrap_or(column)
            .to_owned(),
    )
}

fn field(value: &Value) -> FieldValue {
    match value {
        Value::String(s) => match event::parse_datetime(s) {
            Some(at) if s.contains('T') => {
                event::text(at.to_rfc3339_opts(SecondsFormat::Millis, true))
            }
            _ => event::text(s.clone()),
        },
        other => event::json_field(other),
    }
}

fn to_pulled(
    client: &PullClient,
    scope: &Scope,
    row: &Map<String, Value>,
) -> Result<Pulled, PullError> {
    let id_column = format!("{}id", scope.object);
    let id = row
        .get(&id_column)
        .and_then(Value::as_str)
        .filter(|id| event::valid_record_id(id))
        .ok_or_else(|| client.garbage("an entity", format!("a row without {id_column}")))?;
    let date = |name: &str| {
        row.get(name)
            .and_then(Value::as_str)
            .and_then(event::parse_datetime)
    };
    let modified = date("modifiedon")
        .ok_or_else(|| client.garbage("an entity", format!("row {id} has no modifiedon")))?;
    let change = match date("createdon") {
        Some(created) if created == modified => ChangeType::Created,
        _ => ChangeType::Updated,
    };
    let fields: Vec<(String, FieldValue)> = row
        .iter()
        .filter_map(|(column, value)| Some((webhook_name(column)?, field(value))))
        .collect();
    let owner = row
        .get(&format!("_{OWNER_ATTRIBUTE}_value"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Pulled {
        object: scope.object.clone(),
        id: id.to_owned(),
        change,
        modified,
        fields,
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_sets_are_plural() {
        assert_eq!(entity_set("opportunity"), "opportunities");
        assert_eq!(entity_set("account"), "accounts");
        assert_eq!(entity_set("new_invoice"), "new_invoices");
        assert_eq!(entity_set("new_address"), "new_addresses");
    }

    #[test]
    fn columns_are_named_like_webhook_attributes() {
        assert_eq!(webhook_name("_ownerid_value").as_deref(), Some("ownerid"));
        assert_eq!(
            webhook_name("estimatedvalue").as_deref(),
            Some("estimatedvalue")
        );
        assert_eq!(
            webhook_name("statecode@OData.Community.Display.V1.FormattedValue").as_deref(),
            Some("statecode@OData.Community.Display.V1.FormattedValue")
        );
        assert_eq!(webhook_name("@odata.etag"), None);
        assert_eq!(
            webhook_name("_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"),
            None
        );
    }
}
