//! What every event must satisfy before it is published, whichever connector built it: values
//! the downstream consumers, PostgreSQL and Kafka can store. A value refused here is refused
//! with the field it is in, so the sender can fix it; accepted, it would be dead-lettered or
//! (before consumers classified database errors) hold up a partition.

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use crm_sync_proto::Message as _;
use crm_sync_proto::Timestamp;
use crm_sync_proto::v1::{CrmEvent, FieldValue, field_value};

use crate::event;

/// Size and count limits of the events of one request (`ingest.*` settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events one request may produce after expansion (e.g. a HubSpot merge naming many ids).
    pub max_events_per_request: usize,
    /// Bytes of one field value (Salesforce's longest text area is 131,072 characters).
    pub max_field_bytes: usize,
    /// Bytes of one encoded event: keeps every event well below Kafka's message size limit.
    pub max_event_bytes: usize,
}

impl Limits {
    /// The `ingest.*` settings' limits.
    pub fn from_settings(ingest: &crm_sync_runtime::settings::IngestSettings) -> Limits {
        Limits {
            max_events_per_request: ingest.max_events_per_request,
            max_field_bytes: ingest.max_field_bytes,
            max_event_bytes: ingest.max_event_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events_per_request: 1000,
            max_field_bytes: 131_072,
            max_event_bytes: 524_288,
        }
    }
}

/// The longest id (user, account, delivery) an event may carry, in bytes. Record ids have the
/// same cap (see [`event::valid_record_id`]); PostgreSQL indexes rows of at most ~2.7 kB.
pub const MAX_ID_BYTES: usize = 255;
/// The longest field name, owner name or email, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Years a date may have, in the event's times and in any field value written as a date-time:
/// what RFC 3339 can write (four digits), including the `0001-01-01` some CRMs use for "no
/// date", and well inside PostgreSQL's range. Negative or five-digit years parse but cannot be
/// stored.
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A value that cannot be stored; `field` names where it is, `record` (`<object>/<id>`)
    /// which of a request's records holds it, where its id can be told.
    #[error("{}{field}: {reason}", record_prefix(.record.as_deref()))]
    Invalid {
        record: Option<String>,
        field: String,
        reason: String,
    },
    #[error(
        "the request carries {count} events, more than the limit of {limit} per request (ingest.max_events_per_request); send fewer at once"
    )]
    TooManyEvents { count: usize, limit: usize },
    #[error(
        "record {record} would be a {bytes}-byte event, more than the limit of {limit} bytes (ingest.max_event_bytes)"
    )]
    EventTooLarge {
        record: String,
        bytes: usize,
        limit: usize,
    },
}

impl Refusal {
    /// The refusal of a value of `e`, naming `e` where its object and id are valid.
    fn in_record(self, e: &CrmEvent) -> Refusal {
        match self {
            Refusal::Invalid {
                record: None,
                field,
                reason,
            } if event::valid_object_type(&e.object_type)
                && event::valid_record_id(&e.record_id) =>
            {
                Refusal::Invalid {
                    record: Some(format!("{}/{}", e.object_type, e.record_id)),
                    field,
                    reason,
                }
            }
            other => other,
        }
    }

    /// The stable code of the refusal: a 4xx body's `error`, a dead letter's reason.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Invalid { .. } => "invalid_value",
            Refusal::TooManyEvents { .. } => "too_many_events",
            Refusal::EventTooLarge { .. } => "event_too_large",
        }
    }
}

fn record_prefix(record: Option<&str>) -> String {
    record.map(|r| format!("record {r}: ")).unwrap_or_default()
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Refusal {
    Refusal::Invalid {
        record: None,
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks the events of one request. A refusal names the record, so that the CRM's admin can
/// tell which of a request's records to fix (unless its id or object is what is wrong).
pub fn events(events: &[CrmEvent], limits: &Limits) -> Result<(), Refusal> {
    if events.len() > limits.max_events_per_request {
        return Err(Refusal::TooManyEvents {
            count: events.len(),
            limit: limits.max_events_per_request,
        });
    }
    events
        .iter()
        .try_for_each(|e| one(e, limits).map_err(|refusal| refusal.in_record(e)))
}

/// Checks one event, whichever way it came (a webhook, a pull).
pub fn one(e: &CrmEvent, limits: &Limits) -> Result<(), Refusal> {
    if !event::valid_object_type(&e.object_type) {
        return Err(invalid(
            "object_type",
            "must start with a letter and have at most 100 letters, digits, `_`, `.` or `-`",
        ));
    }
    if !event::valid_record_id(&e.record_id) {
        return Err(invalid(
            "record_id",
            format!(
                "must be 1 to {MAX_ID_BYTES} bytes, without `/` or control characters (got {} bytes)",
                e.record_id.len()
            ),
        ));
    }
    id("crm_account_id", &e.crm_account_id)?;
    id("source_delivery_id", &e.source_delivery_id)?;
    id("source_change_type", &e.source_change_type)?;
    if let Some(owner) = &e.owner {
        id("owner.crm_user_id", &owner.crm_user_id)?;
        text("owner.name", &owner.name, MAX_NAME_BYTES)?;
        text("owner.email", &owner.email, MAX_NAME_BYTES)?;
    }
    time("occurred_at", e.occurred_at.as_ref())?;
    time("received_at", e.received_at.as_ref())?;
    for (map, values) in [
        ("fields", &e.fields),
        ("previous_fields", &e.previous_fields),
    ] {
        for (name, value) in values {
            field(map, name, value, limits)?;
        }
    }
    let bytes = e.encoded_len();
    if bytes > limits.max_event_bytes {
        return Err(Refusal::EventTooLarge {
            record: format!("{}/{}", e.object_type, e.record_id),
            bytes,
            limit: limits.max_event_bytes,
        });
    }
    Ok(())
}

/// Ids may be empty (not every CRM names every one) but are short and printable.
fn id(name: &str, value: &str) -> Result<(), Refusal> {
    if value.len() > MAX_ID_BYTES {
        return Err(invalid(
            name,
            format!("must be at most {MAX_ID_BYTES} bytes (got {})", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(name, "must not contain control characters"));
    }
    Ok(())
}

/// Free text: anything but NUL (which PostgreSQL cannot store), up to `max` bytes.
fn text(name: &str, value: &str, max: usize) -> Result<(), Refusal> {
    if value.len() > max {
        return Err(invalid(
            name,
            format!("must be at most {max} bytes (got {})", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(name, "must not contain NUL characters"));
    }
    Ok(())
}

fn time(name: &str, value: Option<&Timestamp>) -> Result<(), Refusal> {
    let Some(t) = value else { return Ok(()) };
    let at = u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos));
    match at {
        Some(at) if YEARS.contains(&at.year()) => Ok(()),
        _ => Err(out_of_range(name)),
    }
}

fn out_of_range(name: &str) -> Refusal {
    invalid(
        name,
        format!(
            "dates must be between the years {} and {}",
            YEARS.start(),
            YEARS.end()
        ),
    )
}

fn field(map: &str, name: &str, value: &FieldValue, limits: &Limits) -> Result<(), Refusal> {
    let label = || format!("{map}.{name}");
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(invalid(
            label(),
            format!("field names must be 1 to {MAX_NAME_BYTES} bytes without control characters"),
        ));
    }
    let value = match &value.kind {
        Some(field_value::Kind::Text(v) | field_value::Kind::Number(v)) => v,
        _ => return Ok(()),
    };
    text(&label(), value, limits.max_field_bytes)?;
    match date_time_year(value) {
        Some(year) if !YEARS.contains(&year) => Err(out_of_range(&label())),
        _ => Ok(()),
    }
}

/// The year of a value written as a date-time in one of the forms workflows read as dates
/// (RFC 3339, with a `+0000` offset, or without an offset), if it is one. Those forms accept
/// signed and five-digit years, which no database column can hold.
fn date_time_year(value: &str) -> Option<i32> {
    let value = value.trim();
    // Every such form starts with a year, a `-` and two digits; skip anything else cheaply.
    let digits = value.trim_start_matches(['-', '+']);
    if !digits.starts_with(|c: char| c.is_ascii_digit()) || !value.contains('T') {
        return None;
    }
    event::parse_datetime(value)
        .map(|t: DateTime<Utc>| t.year())
        .or_else(|| {
            NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.year())
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crm_sync_proto::v1::CrmUser;

    use super::*;

    fn base() -> CrmEvent {
        CrmEvent {
            object_type: "Opportunity".into(),
            record_id: "006A".into(),
            fields: BTreeMap::from([("StageName".into(), event::text("Closed Won"))]),
            ..CrmEvent::default()
        }
    }

    fn refused(e: CrmEvent) -> String {
        match events(&[e], &Limits::default()) {
            Err(Refusal::Invalid { field, .. }) => field,
            other => panic!("expected a refused field, got {other:?}"),
        }
    }

    #[test]
    fn a_refused_value_names_its_record_unless_the_id_is_what_is_wrong() {
        let mut bad_owner = base();
        bad_owner.record_id = "006B".into();
        bad_owner.owner = Some(crm_sync_proto::v1::CrmUser {
            crm_user_id: "005\u{1}".into(),
            ..Default::default()
        });
        let refusal = events(&[base(), bad_owner], &Limits::default()).unwrap_err();
        assert!(
            refusal
                .to_string()
                .starts_with("record Opportunity/006B: owner.crm_user_id: "),
            "{refusal}"
        );
        let mut bad_id = base();
        bad_id.record_id = "006/B".into();
        let refusal = events(&[bad_id], &Limits::default()).unwrap_err();
        assert!(refusal.to_string().starts_with("record_id: "), "{refusal}");
    }

    #[test]
    fn a_plain_event_passes() {
        assert_eq!(events(&[base()], &Limits::default()), Ok(()));
    }

    #[test]
    fn values_postgresql_refuses_are_refused_naming_the_field() {
        let mut e = base();
        e.fields.insert(
            "CloseDate".into(),
            event::text("-5000-01-01T00:00:00.000+0000"),
        );
        assert_eq!(refused(e), "fields.CloseDate");

        let mut e = base();
        e.owner = Some(CrmUser {
            crm_user_id: "005\0A".into(),
            ..CrmUser::default()
        });
        assert_eq!(refused(e), "owner.crm_user_id");

        let mut e = base();
        e.owner = Some(CrmUser {
            crm_user_id: "x".repeat(5000),
            ..CrmUser::default()
        });
        assert_eq!(refused(e), "owner.crm_user_id");

        let mut e = base();
        e.record_id = "0".repeat(4000);
        assert_eq!(refused(e), "record_id");

        let mut e = base();
        e.previous_fields
            .insert("Description".into(), event::text("a\0b"));
        assert_eq!(refused(e), "previous_fields.Description");

        let mut e = base();
        e.occurred_at = Some(Timestamp {
            seconds: -220_000_000_000,
            nanos: 0,
        });
        assert_eq!(refused(e), "occurred_at");

        let mut e = base();
        e.fields
            .insert("Description".into(), event::text("x".repeat(1_500_000)));
        assert_eq!(refused(e), "fields.Description");
    }

    #[test]
    fn dates_crms_really_send_pass() {
        for ok in [
            "2026-11-20T15:04:05.000Z",
            "2026-11-20T15:04:05.000+0000",
            "2026-11-20T15:04:05",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-11-20",
            "1732115045000",
            "-12.5",
            "Tuesday",
        ] {
            let mut e = base();
            e.fields.insert("When".into(), event::text(ok));
            assert_eq!(events(&[e], &Limits::default()), Ok(()), "{ok}");
        }
        for bad in ["+10000-01-01T00:00:00+0000", "-0001-01-01T00:00:00"] {
            let mut e = base();
            e.fields.insert("When".into(), event::text(bad));
            assert_eq!(refused(e), "fields.When", "{bad}");
        }
    }

    #[test]
    fn counts_and_sizes_are_capped() {
        let limits = Limits {
            max_events_per_request: 2,
            max_field_bytes: 100_000,
            max_event_bytes: 1000,
        };
        assert_eq!(
            events(&[base(), base(), base()], &limits),
            Err(Refusal::TooManyEvents { count: 3, limit: 2 })
        );
        let mut big = base();
        big.fields
            .insert("Notes".into(), event::text("x".repeat(5000)));
        assert!(matches!(
            events(&[big], &limits),
            Err(Refusal::EventTooLarge { bytes, limit: 1000, .. }) if bytes > 5000
        ));
    }
}
