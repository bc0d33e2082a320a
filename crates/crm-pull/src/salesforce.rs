//! Salesforce REST: `queryAll` (deleted rows included, `IsDeleted`) ordered by `SystemModstamp`,
//! `nextRecordsUrl` paging, `sobjects/{object}/{id}` for one record, and the daily API usage
//! each answer reports in `Sforce-Limit-Info: api-usage=used/limit`.

use chrono::{DateTime, SecondsFormat, Utc};
use crm_sync_crm_directory::{ApiResponse, LookupError, SALESFORCE_API_VERSION};
use crm_sync_ingest::event;
use crm_sync_ingest::salesforce::mapping::parse_datetime;
use crm_sync_proto::v1::{ChangeType, CrmEvent};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{Cursor, Page, PullClient, PullError, Pulled, Scope};

/// Fields every query reads besides the workflows' own.
const SYSTEM_FIELDS: [&str; 6] = [
    "Id",
    "IsDeleted",
    "SystemModstamp",
    "CreatedDate",
    "LastModifiedDate",
    "OwnerId",
];

/// `api-usage=25/15000` → (25, 15000).
pub(crate) fn limit_info(headers: &HeaderMap) -> Option<(u64, u64)> {
    let value = headers.get("sforce-limit-info")?.to_str().ok()?;
    let usage = value
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("api-usage="))?;
    let (used, limit) = usage.split_once('/')?;
    Some((used.trim().parse().ok()?, limit.trim().parse().ok()?))
}

fn soql(scope: &Scope, since: DateTime<Utc>) -> String {
    let mut fields: Vec<&str> = SYSTEM_FIELDS.to_vec();
    for f in &scope.fields {
        if !fields.iter().any(|s| s.eq_ignore_ascii_case(f)) {
            fields.push(f);
        }
    }
    format!(
        "SELECT {} FROM {} WHERE SystemModstamp >= {} ORDER BY SystemModstamp ASC, Id ASC",
        fields.join(", "),
        scope.object,
        since.to_rfc3339_opts(SecondsFormat::Millis, true)
    )
}

async fn first_page(
    client: &PullClient,
    scope: &Scope,
    since: DateTime<Utc>,
) -> Result<ApiResponse, PullError> {
    let q = soql(scope, since);
    let page_size = client.page_size(2000);
    let response = client
        .send_answering(
            "the Salesforce queryAll API",
            &[StatusCode::FORBIDDEN],
            |http, base| {
                http.get(format!(
                    "{base}/services/data/{SALESFORCE_API_VERSION}/queryAll"
                ))
                .query(&[("q", q.as_str())])
                .header("Sforce-Query-Options", format!("batchSize={page_size}"))
            },
        )
        .await?;
    forbidden(scope, response)
}

/// A 403 as an error: the object's when the API user may not read it (its profile lacks the
/// permission; the integration's other objects can still be pulled), else the credentials'.
fn forbidden(scope: &Scope, response: ApiResponse) -> Result<ApiResponse, PullError> {
    if response.status != StatusCode::FORBIDDEN {
        return Ok(response);
    }
    let excerpt: String = response.body.chars().take(200).collect();
    let errors: Vec<ApiError> = serde_json::from_str(&response.body).unwrap_or_default();
    if let Some(denied) = errors.iter().find(|e| {
        matches!(
            e.error_code.as_str(),
            "INSUFFICIENT_ACCESS" | "INSUFFICIENT_ACCESS_OR_READONLY"
        )
    }) {
        return Err(PullError::Invalid(format!(
            "Salesforce object {}: the API user may not read it (403 {}): {excerpt}",
            scope.object, denied.error_code
        )));
    }
    Err(PullError::Api(LookupError::Unauthorized(format!(
        "the Salesforce queryAll API answered 403 Forbidden: {excerpt}"
    ))))
}

/// The page a query locator names; `None` when Salesforce no longer has the locator (400
/// `INVALID_QUERY_LOCATOR`, or 404).
async fn next_page(
    client: &PullClient,
    scope: &Scope,
    next: &str,
) -> Result<Option<ApiResponse>, PullError> {
    // A query locator names a path under the instance.
    if !next.starts_with("/services/data/") {
        return Err(client.garbage("a query locator", format!("{next:?}")));
    }
    let page_size = client.page_size(2000);
    let response = client
        .send_answering(
            "the Salesforce queryAll API",
            &[StatusCode::BAD_REQUEST, StatusCode::FORBIDDEN],
            |http, base| {
                http.get(format!("{base}{next}"))
                    .header("Sforce-Query-Options", format!("batchSize={page_size}"))
            },
        )
        .await?;
    let response = forbidden(scope, response)?;
    if response.is_not_found() {
        return Ok(None);
    }
    if response.status == StatusCode::BAD_REQUEST {
        let codes: Vec<ApiError> = serde_json::from_str(&response.body).unwrap_or_default();
        if codes
            .iter()
            .any(|e| e.error_code == "INVALID_QUERY_LOCATOR")
        {
            return Ok(None);
        }
        return Err(PullError::Api(LookupError::Unexpected(format!(
            "the Salesforce queryAll API answered 400 Bad Request: {}",
            response.body.chars().take(200).collect::<String>()
        ))));
    }
    Ok(Some(response))
}

/// One entry of Salesforce's error list.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiError {
    error_code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryResult {
    done: bool,
    #[serde(default)]
    next_records_url: Option<String>,
    records: Vec<Map<String, Value>>,
}

pub(crate) async fn changes(
    client: &PullClient,
    scope: &Scope,
    cursor: &Cursor,
) -> Result<Page, PullError> {
    let response = match &cursor.token {
        Some(next) => match next_page(client, scope, next).await? {
            Some(response) => response,
            // The locator expired (idle for about 15 minutes, as a job waiting out a retry is,
            // or closed because the user opened more than 10): the query starts again at the
            // newest stamp already published; records at that stamp come again with the same
            // event ids, which the pipeline drops.
            None => {
                tracing::info!(object = %scope.object, since = %cursor.since, "the Salesforce query locator expired; querying again from the newest change seen");
                first_page(client, scope, cursor.since).await?
            }
        },
        None => first_page(client, scope, cursor.since).await?,
    };
    if response.is_not_found() {
        return Err(client.garbage("a query result", "404"));
    }
    let result: QueryResult =
        serde_json::from_str(&response.body).map_err(|e| client.garbage("a query result", e))?;
    let mut events = Vec::with_capacity(result.records.len());
    let mut newest: Option<DateTime<Utc>> = None;
    for record in &result.records {
        let pulled = to_pulled(client, scope, record)?;
        newest = newest.max(Some(pulled.modified));
        events.push(client.event(pulled));
    }
    let next = match (result.done, result.next_records_url) {
        (true, _) => None,
        (false, Some(url)) => Some(Cursor {
            stream: 0,
            // Where the query starts again should the locator expire.
            since: newest.unwrap_or(cursor.since),
            token: Some(url),
            delta: None,
            origin: None,
        }),
        (false, None) => {
            return Err(client.garbage("a query result", "done is false without nextRecordsUrl"));
        }
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
    let mut fields: Vec<&str> = SYSTEM_FIELDS.to_vec();
    fields.extend(scope.fields.iter().map(String::as_str));
    let list = fields.join(",");
    let response = client
        .send("the Salesforce sobjects API", |http, base| {
            http.get(format!(
                "{base}/services/data/{SALESFORCE_API_VERSION}/sobjects/{}/{id}",
                scope.object
            ))
            .query(&[("fields", list.as_str())])
        })
        .await?;
    if response.is_not_found() {
        return Ok(None);
    }
    let record: Map<String, Value> =
        serde_json::from_str(&response.body).map_err(|e| client.garbage("a record", e))?;
    Ok(Some(client.event(to_pulled(client, scope, &record)?)))
}

fn to_pulled(
    client: &PullClient,
    scope: &Scope,
    record: &Map<String, Value>,
) -> Result<Pulled, PullError> {
    let text = |name: &str| record.get(name).and_then(Value::as_str);
    let id = text("Id")
        .filter(|id| event::valid_record_id(id))
        .ok_or_else(|| client.garbage("a record", "a record without Id"))?;
    let date = |name: &str| text(name).and_then(parse_datetime);
    let modified = date("SystemModstamp")
        .or_else(|| date("LastModifiedDate"))
        .ok_or_else(|| client.garbage("a record", format!("record {id} has no SystemModstamp")))?;
    let deleted = record.get("IsDeleted").and_then(Value::as_bool) == Some(true);
    // As the Outbound Message connector decides: never modified since created → created.
    let change = match (deleted, date("CreatedDate"), date("LastModifiedDate")) {
        (true, _, _) => ChangeType::Deleted,
        (false, Some(c), Some(m)) if c == m => ChangeType::Created,
        _ => ChangeType::Updated,
    };
    let fields = record
        .iter()
        // `attributes` is the API's own metadata; relationship sub-objects are not fields.
        .filter(|(name, value)| name.as_str() != "attributes" && !value.is_object())
        .map(|(name, value)| (name.clone(), event::json_field(value)))
        .collect();
    Ok(Pulled {
        object: object_type(scope, record),
        id: id.to_owned(),
        change,
        modified,
        fields,
        owner: text("OwnerId")
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned),
    })
}

/// The object as Salesforce spells it (`attributes.type`), which is how its webhooks name it,
/// whatever case the workflow wrote it in: the record's events then share one Kafka key and one
/// record state.
fn object_type(scope: &Scope, record: &Map<String, Value>) -> String {
    record
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .filter(|t| t.eq_ignore_ascii_case(&scope.object))
        .unwrap_or(&scope.object)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_info_reads_api_usage() {
        let mut h = HeaderMap::new();
        h.insert("sforce-limit-info", "api-usage=25/15000".parse().unwrap());
        assert_eq!(limit_info(&h), Some((25, 15000)));
        h.insert(
            "sforce-limit-info",
            "per-app-api-usage=1/100(appName=x), api-usage=7/9"
                .parse()
                .unwrap(),
        );
        assert_eq!(limit_info(&h), Some((7, 9)));
    }

    #[test]
    fn soql_orders_by_modstamp_and_adds_system_fields_once() {
        let scope = Scope {
            fields: vec!["StageName".into(), "ownerid".into(), "Amount".into()],
            ..Scope::new("Opportunity")
        };
        let since = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            soql(&scope, since),
            "SELECT Id, IsDeleted, SystemModstamp, CreatedDate, LastModifiedDate, OwnerId, StageName, Amount \
             FROM Opportunity WHERE SystemModstamp >= 2026-11-01T00:00:00.000Z ORDER BY SystemModstamp ASC, Id ASC"
        );
    }

    #[test]
    fn records_name_their_object_as_salesforce_spells_it() {
        let record = |t: &str| {
            serde_json::from_value::<Map<String, Value>>(
                serde_json::json!({"attributes": {"type": t}, "Id": "006A"}),
            )
            .unwrap()
        };
        let scope = Scope::new("opportunity");
        assert_eq!(object_type(&scope, &record("Opportunity")), "Opportunity");
        // Anything but the queried object, spelled otherwise, is not taken for its name.
        assert_eq!(object_type(&scope, &record("Account")), "opportunity");
        assert_eq!(object_type(&scope, &Map::new()), "opportunity");
    }
}
