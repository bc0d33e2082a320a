//! Salesforce Change Data Capture events, as a subscriber relays them to ingest in JSON.
//!
//! Accepted per element (one, or a JSON array of up to [`MAX_CHANGE_EVENTS`]):
//! - the Streaming API (CometD) message, `{"data": {"schema", "payload", "event": {"replayId"}},
//!   "channel"}`, or its inner `{"schema", "payload", "event"}`;
//! - the decoded Pub/Sub API payload itself, `{"ChangeEventHeader": {…}, <fields>}`.
//!
//! One change event may name several records (`recordIds`, for the same change applied to many
//! records in one transaction): it becomes one `CrmEvent` per record. CREATE and UNDELETE carry
//! every non-null field, UPDATE only the changed ones, DELETE none; gap events (`GAP_*`) carry
//! only the header, and `GAP_OVERFLOW` names no record at all, so it produces nothing. A field is
//! set to null only when the header lists it in `nulledFields` (the Pub/Sub API sends unchanged
//! fields as null too); fields in `diffFields` carry a text diff rather than the value and are
//! left out. Compound fields (`Name`, `BillingAddress`) are flattened to `Name.FirstName`.
//!
//! The delivery id is the change's `transactionKey` and `sequenceNumber`, which identify it in
//! the org: a replayed event gets the same event ids.

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmKind, CrmUser, FieldValue};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::event::{self, event_id, json_field, timestamp};

/// Change events accepted per request.
pub const MAX_CHANGE_EVENTS: usize = 100;
/// `CrmEvent`s one request may produce (change events × records).
pub const MAX_RECORDS: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub header: Header,
    /// The record fields, as sent.
    pub fields: Map<String, Value>,
    pub replay_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub entity_name: String,
    pub record_ids: Vec<String>,
    pub change_type: String,
    pub changed_fields: Vec<String>,
    pub nulled_fields: Vec<String>,
    pub diff_fields: Vec<String>,
    pub transaction_key: String,
    pub sequence_number: i64,
    pub commit_timestamp: i64,
    pub commit_user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdcError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body holds no change events")]
    Empty,
    #[error(
        "the body holds {0} change events; at most {MAX_CHANGE_EVENTS} are accepted per request"
    )]
    TooManyEvents(usize),
    #[error("change event {index}: {problem}")]
    Invalid { index: usize, problem: String },
    #[error("the change events name {0} records; at most {MAX_RECORDS} are accepted per request")]
    TooManyRecords(usize),
}

fn invalid(index: usize, problem: impl Into<String>) -> CdcError {
    CdcError::Invalid {
        index,
        problem: problem.into(),
    }
}

pub fn parse(body: &[u8]) -> Result<Vec<ChangeEvent>, CdcError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| CdcError::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        single @ Value::Object(_) => vec![single],
        _ => {
            return Err(invalid(
                1,
                "expected a change event object or an array of them",
            ));
        }
    };
    if items.is_empty() {
        return Err(CdcError::Empty);
    }
    if items.len() > MAX_CHANGE_EVENTS {
        return Err(CdcError::TooManyEvents(items.len()));
    }
    let events = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| change_event(i + 1, item))
        .collect::<Result<Vec<_>, _>>()?;
    let records: usize = events.iter().map(|e| e.header.record_ids.len()).sum();
    if records > MAX_RECORDS {
        return Err(CdcError::TooManyRecords(records));
    }
    Ok(events)
}

fn change_event(index: usize, item: Value) -> Result<ChangeEvent, CdcError> {
    let Value::Object(mut object) = item else {
        return Err(invalid(index, "is not a JSON object"));
    };
    // CometD wraps the payload in `data`; older and newer CometD clients differ on that.
    if let Some(Value::Object(data)) = object.remove("data") {
        object = data;
    }
    let replay_id = object
        .get("event")
        .and_then(|e| e.get("replayId"))
        .and_then(event::id_text);
    let mut payload = match object.remove("payload") {
        Some(Value::Object(payload)) => payload,
        Some(_) => return Err(invalid(index, "`payload` is not an object")),
        None => object,
    };
    let header = match payload.remove("ChangeEventHeader") {
        Some(Value::Object(header)) => header,
        Some(_) => return Err(invalid(index, "`ChangeEventHeader` is not an object")),
        None => return Err(invalid(index, "has no ChangeEventHeader")),
    };
    let header = parse_header(index, &header)?;
    Ok(ChangeEvent {
        header,
        fields: payload,
        replay_id,
    })
}

/// The header's values, each read with an error naming it.
struct HeaderFields<'a> {
    index: usize,
    h: &'a Map<String, Value>,
}

impl HeaderFields<'_> {
    fn string(&self, name: &str) -> Result<String, CdcError> {
        match self.h.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            Some(Value::String(_)) | None | Some(Value::Null) => Err(invalid(
                self.index,
                format!("ChangeEventHeader.{name} is missing"),
            )),
            Some(_) => Err(invalid(
                self.index,
                format!("ChangeEventHeader.{name} is not text"),
            )),
        }
    }

    fn integer(&self, name: &str) -> Result<i64, CdcError> {
        let not_an_integer = || {
            invalid(
                self.index,
                format!("ChangeEventHeader.{name} is not an integer"),
            )
        };
        match self.h.get(name) {
            Some(Value::Number(n)) => n.as_i64().ok_or_else(not_an_integer),
            // Some relays write 64-bit numbers as strings.
            Some(Value::String(s)) => s.trim().parse().map_err(|_| not_an_integer()),
            _ => Err(invalid(
                self.index,
                format!("ChangeEventHeader.{name} is missing"),
            )),
        }
    }

    fn names(&self, name: &str) -> Result<Vec<String>, CdcError> {
        match self.h.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(invalid(
                        self.index,
                        format!("ChangeEventHeader.{name} holds a non-text entry"),
                    )),
                })
                .collect(),
            Some(_) => Err(invalid(
                self.index,
                format!("ChangeEventHeader.{name} is not an array"),
            )),
        }
    }
}

fn parse_header(index: usize, h: &Map<String, Value>) -> Result<Header, CdcError> {
    let fields = HeaderFields { index, h };
    let string = |name: &str| fields.string(name);
    let integer = |name: &str| fields.integer(name);
    let names = |name: &str| fields.names(name);
    let entity_name = string("entityName")?;
    if !event::valid_object_type(&entity_name) {
        return Err(invalid(
            index,
            format!("entityName {entity_name:?} is not an object name"),
        ));
    }
    let change_type = string("changeType")?;
    const KNOWN: [&str; 9] = [
        "CREATE",
        "UPDATE",
        "DELETE",
        "UNDELETE",
        "GAP_CREATE",
        "GAP_UPDATE",
        "GAP_DELETE",
        "GAP_UNDELETE",
        "GAP_OVERFLOW",
    ];
    if !KNOWN.contains(&change_type.as_str()) {
        return Err(invalid(
            index,
            format!("unknown changeType {change_type:?}"),
        ));
    }
    let record_ids = names("recordIds")?;
    if change_type != "GAP_OVERFLOW" {
        if record_ids.is_empty() {
            return Err(invalid(index, "ChangeEventHeader.recordIds is empty"));
        }
        if let Some(bad) = record_ids.iter().find(|id| !event::valid_record_id(id)) {
            return Err(invalid(index, format!("record id {bad:?} is not valid")));
        }
    }
    let commit_timestamp = integer("commitTimestamp")?;
    if event::from_millis(commit_timestamp).is_none() {
        return Err(invalid(
            index,
            "ChangeEventHeader.commitTimestamp is out of range",
        ));
    }
    Ok(Header {
        entity_name,
        record_ids,
        change_type,
        changed_fields: names("changedFields")?,
        nulled_fields: names("nulledFields")?,
        diff_fields: names("diffFields")?,
        transaction_key: string("transactionKey")?,
        sequence_number: integer("sequenceNumber")?,
        commit_timestamp,
        commit_user: h.get("commitUser").and_then(event::id_text),
    })
}

fn change_type(name: &str) -> Option<ChangeType> {
    match name {
        "CREATE" | "GAP_CREATE" | "UNDELETE" | "GAP_UNDELETE" => Some(ChangeType::Created),
        "UPDATE" | "GAP_UPDATE" => Some(ChangeType::Updated),
        "DELETE" | "GAP_DELETE" => Some(ChangeType::Deleted),
        _ => None,
    }
}

/// Flattens the record fields by the rules in the module documentation.
fn fields(event: &ChangeEvent) -> Vec<(String, FieldValue)> {
    let header = &event.header;
    let mut out = Vec::with_capacity(event.fields.len());
    fn walk(
        prefix: &str,
        map: &Map<String, Value>,
        header: &Header,
        out: &mut Vec<(String, FieldValue)>,
    ) {
        for (name, value) in map {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            if header.diff_fields.contains(&path) {
                continue;
            }
            match value {
                Value::Object(inner) => walk(&path, inner, header, out),
                Value::Null => {
                    if header.nulled_fields.contains(&path) {
                        out.push((path, event::null()));
                    }
                }
                other => out.push((path, json_field(other))),
            }
        }
    }
    walk("", &event.fields, header, &mut out);
    // Nulled fields the payload left out entirely are null all the same.
    for nulled in &header.nulled_fields {
        // Pub/Sub API bitmaps ("0x1A", "3-0x04") need the Avro schema to decode: skipped.
        if nulled.starts_with("0x") || nulled.contains("-0x") {
            continue;
        }
        if !out.iter().any(|(name, _)| name == nulled) {
            out.push((nulled.clone(), event::null()));
        }
    }
    out
}

/// One `CrmEvent` per record of every change event, in order.
pub fn to_events(
    integration_id: Uuid,
    events: &[ChangeEvent],
    now: DateTime<Utc>,
) -> Vec<CrmEvent> {
    let mut out = Vec::new();
    for change in events {
        let header = &change.header;
        let Some(kind) = change_type(&header.change_type) else {
            continue;
        };
        let is_gap = header.change_type.starts_with("GAP_");
        let fields: Vec<(String, FieldValue)> = if is_gap || kind == ChangeType::Deleted {
            Vec::new()
        } else {
            fields(change)
        };
        let owner = change
            .fields
            .get("OwnerId")
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(|id| CrmUser {
                crm_user_id: id.to_owned(),
                ..CrmUser::default()
            });
        let occurred_at = event::from_millis(header.commit_timestamp).unwrap_or(now);
        let sequence = header.sequence_number.to_string();
        // Gap events all carry sequence number 1: two of one record in a transaction (a gap
        // create, then a gap update) differ only by their change type.
        let delivery: Vec<&str> = if is_gap {
            vec![&header.transaction_key, &sequence, &header.change_type]
        } else {
            vec![&header.transaction_key, &sequence]
        };
        for record_id in &header.record_ids {
            out.push(CrmEvent {
                event_id: event_id(
                    "salesforce-cdc",
                    integration_id,
                    &[delivery.as_slice(), &[record_id.as_str()]].concat(),
                )
                .to_string(),
                integration_id: integration_id.to_string(),
                crm: CrmKind::Salesforce as i32,
                object_type: header.entity_name.clone(),
                record_id: record_id.clone(),
                change_type: kind as i32,
                fields: fields.iter().cloned().collect(),
                previous_fields: Default::default(),
                owner: owner.clone(),
                occurred_at: Some(timestamp(occurred_at)),
                received_at: Some(timestamp(now)),
                source_delivery_id: format!("{}:{}", header.transaction_key, sequence),
                crm_account_id: String::new(),
                source_change_type: header.change_type.clone(),
                full_snapshot: false,
                fields_omitted: is_gap,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crm_sync_proto::v1::field_value::Kind;

    use super::*;

    /// The change event example of the Change Data Capture Developer Guide (Streaming API form),
    /// for an Employee__c custom object.
    const DOC_CREATE: &str = include_str!("testdata/cdc-create-cometd.json");
    /// An update of two opportunities in one transaction, as the Pub/Sub API decodes it
    /// (unchanged fields null, `nulledFields` named).
    const PUBSUB_UPDATE: &str = include_str!("testdata/cdc-update-pubsub.json");

    fn now() -> DateTime<Utc> {
        event::parse_datetime("2026-12-01T00:00:00Z").unwrap()
    }

    fn kind(e: &CrmEvent, field: &str) -> Option<Kind> {
        e.fields.get(field).and_then(|f| f.kind.clone())
    }

    #[test]
    fn the_documented_create_event_maps_to_a_created_event_with_all_fields() {
        let parsed = parse(DOC_CREATE.as_bytes()).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].replay_id.as_deref(), Some("6"));
        let iid = Uuid::new_v4();
        let events = to_events(iid, &parsed, now());
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.object_type, "Employee__c");
        assert_eq!(e.record_id, "a00D0000008pQRAIA2");
        assert_eq!(e.change_type, ChangeType::Created as i32);
        assert_eq!(e.source_change_type, "CREATE");
        assert_eq!(kind(e, "First_Name__c"), Some(Kind::Text("Joe".into())));
        assert_eq!(kind(e, "Tenure__c"), Some(Kind::Number("2.0".into())));
        assert_eq!(
            kind(e, "Name.LastName"),
            None,
            "no compound field in this object"
        );
        assert_eq!(e.owner.as_ref().unwrap().crm_user_id, "005D0000001cSZsIAM");
        assert_eq!(
            e.event_id,
            event_id(
                "salesforce-cdc",
                iid,
                &[
                    "0002343d-9d90-e395-ed20-cf416ba652ad",
                    "1",
                    "a00D0000008pQRAIA2"
                ]
            )
            .to_string()
        );
        assert_eq!(
            e.source_delivery_id,
            "0002343d-9d90-e395-ed20-cf416ba652ad:1"
        );
        assert_eq!(e.occurred_at.as_ref().unwrap().seconds, 1_612_912_679);
    }

    #[test]
    fn an_update_of_several_records_carries_only_changed_and_nulled_fields() {
        let parsed = parse(PUBSUB_UPDATE.as_bytes()).unwrap();
        let events = to_events(Uuid::nil(), &parsed, now());
        assert_eq!(events.len(), 2);
        let ids: Vec<&str> = events.iter().map(|e| e.record_id.as_str()).collect();
        assert_eq!(ids, ["0065g00000XyZ12AAB", "0065g00000XyZ13AAB"]);
        assert_ne!(events[0].event_id, events[1].event_id);
        for e in &events {
            assert_eq!(e.change_type, ChangeType::Updated as i32);
            assert_eq!(kind(e, "StageName"), Some(Kind::Text("Closed Won".into())));
            assert_eq!(kind(e, "Amount"), Some(Kind::Number("1250.5".into())));
            assert_eq!(kind(e, "NextStep"), Some(Kind::NullValue(true)));
            assert_eq!(
                kind(e, "Description"),
                None,
                "unchanged: null but not nulled"
            );
            assert_eq!(kind(e, "Notes__c"), None, "a diff field is not a value");
            assert_eq!(
                e.owner, None,
                "updates that do not change the owner do not name it"
            );
        }
    }

    #[test]
    fn deletes_and_gap_events_carry_no_fields_and_overflow_produces_nothing() {
        let body = r#"[
          {"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": ["006A"], "changeType": "DELETE",
            "transactionKey": "t1", "sequenceNumber": 1, "commitTimestamp": 1700000000000, "commitUser": "005X"}},
          {"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": ["006B"], "changeType": "UNDELETE",
            "transactionKey": "t2", "sequenceNumber": 1, "commitTimestamp": 1700000000000}, "OwnerId": "005Y", "Amount": 5},
          {"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": ["006C", "006D"], "changeType": "GAP_UPDATE",
            "transactionKey": "t3", "sequenceNumber": 1, "commitTimestamp": 1700000000000}},
          {"ChangeEventHeader": {"entityName": "Task", "recordIds": [], "changeType": "GAP_OVERFLOW",
            "transactionKey": "t4", "sequenceNumber": 1, "commitTimestamp": 1700000000000}}
        ]"#;
        let events = to_events(Uuid::nil(), &parse(body.as_bytes()).unwrap(), now());
        let summary: Vec<(&str, i32, usize, &str)> = events
            .iter()
            .map(|e| {
                (
                    e.record_id.as_str(),
                    e.change_type,
                    e.fields.len(),
                    e.source_change_type.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("006A", ChangeType::Deleted as i32, 0, "DELETE"),
                ("006B", ChangeType::Created as i32, 2, "UNDELETE"),
                ("006C", ChangeType::Updated as i32, 0, "GAP_UPDATE"),
                ("006D", ChangeType::Updated as i32, 0, "GAP_UPDATE"),
            ]
        );
        assert_eq!(events[0].owner, None);
        assert_eq!(events[1].owner.as_ref().unwrap().crm_user_id, "005Y");
    }

    /// Gap events all carry sequence number 1: a gap create and a gap update of one record in
    /// one transaction are two changes, and say that their fields were left out.
    #[test]
    fn gap_events_of_one_record_in_a_transaction_are_distinct_and_say_their_fields_are_missing() {
        let body = r#"[
          {"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": ["006G"], "changeType": "GAP_CREATE",
            "transactionKey": "t5", "sequenceNumber": 1, "commitTimestamp": 1700000000000}},
          {"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": ["006G"], "changeType": "GAP_UPDATE",
            "transactionKey": "t5", "sequenceNumber": 1, "commitTimestamp": 1700000000000}},
          {"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": ["006G"], "changeType": "UPDATE",
            "transactionKey": "t6", "sequenceNumber": 1, "commitTimestamp": 1700000000000}, "Amount": 5}
        ]"#;
        let iid = Uuid::nil();
        let events = to_events(iid, &parse(body.as_bytes()).unwrap(), now());
        assert_eq!(events.len(), 3);
        assert_ne!(events[0].event_id, events[1].event_id);
        let omitted: Vec<bool> = events.iter().map(|e| e.fields_omitted).collect();
        assert_eq!(omitted, [true, true, false]);
        // Ordinary events keep the ids they had: a redelivery still deduplicates.
        assert_eq!(
            events[2].event_id,
            event_id("salesforce-cdc", iid, &["t6", "1", "006G"]).to_string()
        );
    }

    #[test]
    fn malformed_events_name_the_problem() {
        let cases: [(&str, &str); 8] = [
            ("nope", "the body is not JSON"),
            ("[]", "the body holds no change events"),
            ("42", "change event 1: expected"),
            (r#"[{"x": 1}]"#, "change event 1: has no ChangeEventHeader"),
            (
                r#"{"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": ["1"], "changeType": "MERGE", "transactionKey": "t", "sequenceNumber": 1, "commitTimestamp": 1}}"#,
                "unknown changeType \"MERGE\"",
            ),
            (
                r#"{"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": [], "changeType": "UPDATE", "transactionKey": "t", "sequenceNumber": 1, "commitTimestamp": 1}}"#,
                "recordIds is empty",
            ),
            (
                r#"{"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": ["1"], "changeType": "UPDATE", "sequenceNumber": 1, "commitTimestamp": 1}}"#,
                "transactionKey is missing",
            ),
            (
                r#"{"ChangeEventHeader": {"entityName": "Opp/x", "recordIds": ["1"], "changeType": "UPDATE", "transactionKey": "t", "sequenceNumber": 1, "commitTimestamp": 1}}"#,
                "is not an object name",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
        let many = format!("[{}]", vec![r#"{"ChangeEventHeader": {}}"#; 101].join(","));
        assert_eq!(
            parse(many.as_bytes()).unwrap_err(),
            CdcError::TooManyEvents(101)
        );
    }
}
