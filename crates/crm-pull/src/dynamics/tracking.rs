//! Deletes, from Dataverse's change tracking (stream 1 of a pass; `$filter=modifiedon` cannot see
//! a row that is gone). A tracked query (`Prefer: odata.track-changes`) of the table's ids ends
//! with an `@odata.deltaLink`; read at the next run, that link lists the rows deleted since as
//! `$deletedEntity` entries. The link is kept between runs of a schedule (the job's `delta`).
//!
//! The first run of a schedule only establishes the link: it reads the table's ids (no records
//! are published), so deletes are seen from the second run on. A backfill, which has no next run,
//! establishes none (`Scope::establish_tracking`). Changed rows in a delta answer are
//! skipped: stream 0 already pulled them whole. A table without change tracking enabled (an
//! option in its Dataverse settings) has its deletes skipped with a warning, not a failed job; a
//! link Dataverse no longer honours (change tracking keeps 90 days by default) is replaced by a
//! new one, and the deletes in between are missed.

use chrono::Utc;
use crm_sync_crm_directory::LookupError;
use crm_sync_ingest::event;
use crm_sync_proto::v1::ChangeType;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{API, entity_set};
use crate::{Cursor, Page, PullClient, PullError, Pulled, Scope};

#[derive(Deserialize)]
struct Tracked {
    value: Vec<Map<String, Value>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    delta_link: Option<String>,
}

/// What a tracked request read from.
enum Source<'a> {
    /// Paging within a tracked answer (a next link).
    Paging(&'a str),
    /// The link kept from the previous run.
    Kept(&'a str),
    /// No link yet: the table's ids, to get one.
    Start,
}

pub(super) async fn deletes(
    client: &PullClient,
    scope: &Scope,
    cursor: &Cursor,
) -> Result<Page, PullError> {
    let source = match (&cursor.token, &cursor.delta) {
        (Some(link), _) => Source::Paging(link),
        (None, Some(link)) => Source::Kept(link),
        (None, None) => Source::Start,
    };
    let answer = match request(client, scope, &source).await {
        Ok(answer) => answer,
        Err(PullError::Api(LookupError::Unexpected(why))) => {
            return refused(scope, cursor, &source, &why);
        }
        Err(other) => return Err(other),
    };
    if answer.is_not_found() {
        return Err(PullError::Invalid(format!(
            "Dataverse table {:?}: the Web API does not know its entity set",
            scope.object
        )));
    }
    let tracked: Tracked = serde_json::from_str(&answer.body)
        .map_err(|e| client.garbage("a tracked entity collection", e))?;
    let mut events = Vec::new();
    for row in &tracked.value {
        if let Some(id) = deleted_id(row) {
            let id = id
                .filter(|id| event::valid_record_id(id))
                .ok_or_else(|| client.garbage("a deleted entity", "an entry without its id"))?;
            events.push(deleted(client, scope, id));
        }
    }
    for link in [&tracked.next_link, &tracked.delta_link]
        .into_iter()
        .flatten()
    {
        if !link.contains(API) {
            return Err(client.garbage("a tracked entity collection", "its next or delta link"));
        }
    }
    let next = tracked.next_link.map(|link| Cursor {
        stream: 1,
        since: cursor.since,
        token: Some(link),
        delta: cursor.delta.clone(),
        origin: None,
    });
    Ok(Page {
        events,
        next,
        newest: None,
        delta: tracked.delta_link,
    })
}

async fn request(
    client: &PullClient,
    scope: &Scope,
    source: &Source<'_>,
) -> Result<crm_sync_crm_directory::ApiResponse, PullError> {
    let prefer = format!(
        "odata.track-changes,odata.maxpagesize={}",
        client.page_size(5000)
    );
    let path = match source {
        // Only the path of a link is followed, always on the account's own API root.
        Source::Paging(link) | Source::Kept(link) => link
            .find(API)
            .map(|at| link[at..].to_owned())
            .ok_or_else(|| client.garbage("a tracked entity collection", "its delta link"))?,
        Source::Start => format!(
            "{API}/{}?$select={}id",
            entity_set(&scope.object),
            scope.object
        ),
    };
    client
        .send("the Dataverse Web API (change tracking)", |http, base| {
            http.get(format!("{base}{path}"))
                .header("Prefer", prefer.as_str())
        })
        .await
}

/// A tracked request Dataverse refused (a 4xx other than 401/403/404/429).
fn refused(
    scope: &Scope,
    cursor: &Cursor,
    source: &Source<'_>,
    why: &str,
) -> Result<Page, PullError> {
    let skipped = Page {
        events: Vec::new(),
        next: None,
        newest: None,
        delta: None,
    };
    if why.to_ascii_lowercase().contains("change tracking") {
        tracing::warn!(
            table = scope.object,
            answer = why,
            "change tracking is not enabled on this Dataverse table: its deletes are not reconciled"
        );
        return Ok(skipped);
    }
    if let Source::Kept(_) = source {
        tracing::warn!(
            table = scope.object,
            answer = why,
            "Dataverse no longer honours the kept delta link: tracking starts over, and deletes since the last run are missed"
        );
        return Ok(Page {
            next: Some(Cursor {
                stream: 1,
                since: cursor.since,
                token: None,
                delta: None,
                origin: None,
            }),
            ..skipped
        });
    }
    Err(PullError::Api(LookupError::Unexpected(why.to_owned())))
}

/// `Some(id)` for a `$deletedEntity` entry (`None` inside when it names no id).
fn deleted_id(row: &Map<String, Value>) -> Option<Option<&str>> {
    let deleted = row
        .get("@odata.context")
        .and_then(Value::as_str)
        .is_some_and(|c| c.ends_with("$deletedEntity"))
        || row.get("reason").and_then(Value::as_str) == Some("deleted");
    deleted.then(|| row.get("id").and_then(Value::as_str))
}

/// A delete carries only the id: the record's fields stay as the record state knows them.
fn deleted(client: &PullClient, scope: &Scope, id: &str) -> crm_sync_proto::v1::CrmEvent {
    let mut event = client.event(Pulled {
        object: scope.object.clone(),
        id: id.to_owned(),
        change: ChangeType::Deleted,
        modified: Utc::now(),
        fields: Vec::new(),
        owner: None,
    });
    event.full_snapshot = false;
    event
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn deleted_entities_are_told_from_changed_rows() {
        let deleted = json!({
            "@odata.context": "https://org.crm.dynamics.com/api/data/v9.2/$metadata#opportunities/$deletedEntity",
            "id": "9d5b1c3e-aaaa-4bbb-8ccc-0000000000aa",
            "reason": "deleted"
        });
        let changed = json!({"@odata.etag": "W/\"1\"", "opportunityid": "9d5b1c3e-aaaa-4bbb-8ccc-0000000000ab"});
        let nameless = json!({"reason": "deleted"});
        assert_eq!(
            deleted_id(deleted.as_object().unwrap()),
            Some(Some("9d5b1c3e-aaaa-4bbb-8ccc-0000000000aa"))
        );
        assert_eq!(deleted_id(changed.as_object().unwrap()), None);
        assert_eq!(deleted_id(nameless.as_object().unwrap()), Some(None));
    }
}
