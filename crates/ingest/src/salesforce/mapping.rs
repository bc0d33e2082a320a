//! From an Outbound Message to `CrmEvent`s.
//!
//! Outbound Messages do not say whether a record was created or updated: a notification is sent
//! whenever the workflow rule behind it fires. A record whose `CreatedDate` equals its
//! `LastModifiedDate` has never been modified since its creation, so that notification is taken
//! as CREATED; every other notification (including those lacking either date) is UPDATED.
//! Deletes never produce Outbound Messages.

use crate::event::timestamp;
use chrono::{DateTime, FixedOffset, Utc};
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmKind, CrmUser, FieldValue, field_value};
use uuid::Uuid;

use super::outbound::{Notification, OutboundError, OutboundMessage, Value};

/// Namespace of Outbound Message event ids (shared by every connector). Never change it: ids
/// must stay the same across deploys so that a redelivery after an upgrade still deduplicates.
pub const EVENT_ID_NAMESPACE: Uuid = crate::event::EVENT_ID_NAMESPACE;

/// The stable event id of one notification delivered to one integration.
pub fn event_id(integration_id: Uuid, notification_id: &str) -> Uuid {
    let name = format!("salesforce-outbound:{integration_id}:{notification_id}");
    Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
}

/// One `CrmEvent` per notification, in message order. `now` is the receive time (and the
/// occurrence time of records without a `LastModifiedDate`).
pub fn to_events(
    integration_id: Uuid,
    message: &OutboundMessage,
    now: DateTime<Utc>,
) -> Result<Vec<CrmEvent>, OutboundError> {
    message
        .notifications
        .iter()
        .enumerate()
        .map(|(i, n)| to_event(integration_id, &message.organization_id, i + 1, n, now))
        .collect()
}

fn to_event(
    integration_id: Uuid,
    organization_id: &str,
    index: usize,
    notification: &Notification,
    now: DateTime<Utc>,
) -> Result<CrmEvent, OutboundError> {
    let date = |field: &'static str| -> Result<Option<DateTime<Utc>>, OutboundError> {
        notification
            .text(field)
            .map(|value| {
                parse_datetime(value).ok_or_else(|| OutboundError::InvalidDateTime {
                    index,
                    field,
                    value: value.to_owned(),
                })
            })
            .transpose()
    };
    let created = date("CreatedDate")?;
    let modified = date("LastModifiedDate")?;
    let change_type = match (created, modified) {
        (Some(c), Some(m)) if c == m => ChangeType::Created,
        _ => ChangeType::Updated,
    };
    let owner = notification
        .text("OwnerId")
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(|id| CrmUser {
            crm_user_id: id.to_owned(),
            ..CrmUser::default()
        });
    let fields = notification
        .fields
        .iter()
        .map(|(name, value)| {
            let kind = match value {
                Value::Nil => field_value::Kind::NullValue(true),
                Value::Text(text) => typed(notification.types.get(name), text),
            };
            (name.clone(), FieldValue { kind: Some(kind) })
        })
        .collect();
    Ok(CrmEvent {
        event_id: event_id(integration_id, &notification.id).to_string(),
        integration_id: integration_id.to_string(),
        crm: CrmKind::Salesforce as i32,
        object_type: notification.object_type.clone(),
        record_id: notification.record_id.clone(),
        change_type: change_type as i32,
        fields,
        previous_fields: Default::default(),
        owner,
        occurred_at: Some(timestamp(modified.unwrap_or(now))),
        received_at: Some(timestamp(now)),
        source_delivery_id: notification.id.clone(),
        crm_account_id: organization_id.to_owned(),
        source_change_type: String::new(),
        full_snapshot: false,
        fields_omitted: false,
    })
}

/// A value as its declared XML Schema type says: numbers and booleans typed (when they read as
/// such), everything else, and every undeclared value, as text.
fn typed(xsd: Option<&String>, text: &str) -> field_value::Kind {
    let t = text.trim();
    match xsd.map(String::as_str) {
        Some("double" | "float" | "decimal" | "int" | "integer" | "long" | "short")
            if !t.is_empty() && t.parse::<f64>().is_ok_and(f64::is_finite) =>
        {
            field_value::Kind::Number(t.to_owned())
        }
        Some("boolean") if matches!(t, "true" | "1") => field_value::Kind::Boolean(true),
        Some("boolean") if matches!(t, "false" | "0") => field_value::Kind::Boolean(false),
        _ => field_value::Kind::Text(text.to_owned()),
    }
}

/// Salesforce writes `2026-11-20T15:04:05.000Z`; offsets may also come as `+0000` or `+00:00`.
pub fn parse_datetime(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    DateTime::parse_from_rfc3339(value)
        .or_else(|_| DateTime::<FixedOffset>::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const SAMPLE: &str = include_str!("testdata/outbound-sample.xml");

    fn notification(fields: &[(&str, Option<&str>)]) -> Notification {
        let fields: BTreeMap<String, Value> = fields
            .iter()
            .map(|(k, v)| {
                let v = v.map_or(Value::Nil, |t| Value::Text(t.to_owned()));
                (k.to_string(), v)
            })
            .collect();
        Notification {
            id: "04l000000000001AAA".into(),
            object_type: "Opportunity".into(),
            record_id: "006000000000001AAA".into(),
            fields,
            types: BTreeMap::new(),
        }
    }

    fn message(n: Notification) -> OutboundMessage {
        OutboundMessage {
            organization_id: "00D000000000001AAA".into(),
            action_id: None,
            notifications: vec![n],
        }
    }

    fn now() -> DateTime<Utc> {
        parse_datetime("2026-12-01T00:00:00Z").unwrap()
    }

    #[test]
    fn the_event_id_namespace_is_pinned() {
        // Changing the namespace would give redelivered notifications new ids after a deploy.
        let iid = Uuid::parse_str("11111111-2222-3333-4444-555555555555").unwrap();
        assert_eq!(
            event_id(iid, "04l5g00000ABCDEAA1"),
            Uuid::new_v5(
                &Uuid::parse_str("3f6c9a2e-51d4-4b7a-8e0f-5c1b2d7e9a40").unwrap(),
                b"salesforce-outbound:11111111-2222-3333-4444-555555555555:04l5g00000ABCDEAA1"
            )
        );
        assert_ne!(event_id(iid, "a"), event_id(Uuid::nil(), "a"));
    }

    #[test]
    fn the_sample_maps_to_an_updated_event() {
        let iid = Uuid::new_v4();
        let parsed = super::super::outbound::parse(SAMPLE.as_bytes()).unwrap();
        let events = to_events(iid, &parsed, now()).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.event_id, event_id(iid, "04l5g00000ABCDEAA1").to_string());
        assert_eq!(e.integration_id, iid.to_string());
        assert_eq!(e.crm, CrmKind::Salesforce as i32);
        assert_eq!(e.object_type, "Opportunity");
        assert_eq!(e.record_id, "0065g00000XyZ12AAB");
        assert_eq!(e.change_type, ChangeType::Updated as i32);
        assert_eq!(e.owner.as_ref().unwrap().crm_user_id, "0055g00000AbCdEAAZ");
        assert_eq!(e.source_delivery_id, "04l5g00000ABCDEAA1");
        assert_eq!(e.crm_account_id, "00D5g000004ABCDEAA");
        assert_eq!(
            e.fields["Amount"].kind,
            Some(field_value::Kind::Text("1250.50".into()))
        );
        assert_eq!(
            e.fields["Description"].kind,
            Some(field_value::Kind::NullValue(true))
        );
        assert_eq!(e.fields.len(), 9);
        let modified = parse_datetime("2026-11-20T15:04:05.000Z").unwrap();
        assert_eq!(e.occurred_at, Some(timestamp(modified)));
        assert_eq!(e.received_at, Some(timestamp(now())));
    }

    #[test]
    fn equal_created_and_modified_dates_mean_created() {
        let n = notification(&[
            ("CreatedDate", Some("2026-11-20T15:04:05.000Z")),
            ("LastModifiedDate", Some("2026-11-20T15:04:05.000+0000")),
        ]);
        let e = &to_events(Uuid::nil(), &message(n), now()).unwrap()[0];
        assert_eq!(e.change_type, ChangeType::Created as i32);

        let only_modified = notification(&[("LastModifiedDate", Some("2026-11-20T15:04:05Z"))]);
        let e = &to_events(Uuid::nil(), &message(only_modified), now()).unwrap()[0];
        assert_eq!(e.change_type, ChangeType::Updated as i32);
    }

    #[test]
    fn without_a_modification_date_the_event_occurred_when_received() {
        let n = notification(&[("LastModifiedDate", None), ("OwnerId", None)]);
        let e = &to_events(Uuid::nil(), &message(n), now()).unwrap()[0];
        assert_eq!(e.occurred_at, Some(timestamp(now())));
        assert_eq!(e.owner, None);
    }

    #[test]
    fn declared_types_travel_typed() {
        let mut n = notification(&[
            ("Amount", Some("1250.50")),
            ("IsWon__c", Some("true")),
            ("Probability", Some("n/a")),
            ("Name", Some("Acme")),
        ]);
        for (field, xsd) in [
            ("Amount", "double"),
            ("IsWon__c", "boolean"),
            ("Probability", "double"),
        ] {
            n.types.insert(field.into(), xsd.into());
        }
        let e = &to_events(Uuid::nil(), &message(n), now()).unwrap()[0];
        let kind = |f: &str| e.fields[f].kind.clone().unwrap();
        assert_eq!(kind("Amount"), field_value::Kind::Number("1250.50".into()));
        assert_eq!(kind("IsWon__c"), field_value::Kind::Boolean(true));
        assert_eq!(
            kind("Probability"),
            field_value::Kind::Text("n/a".into()),
            "unreadable stays text"
        );
        assert_eq!(kind("Name"), field_value::Kind::Text("Acme".into()));
    }

    #[test]
    fn salesforce_date_times_parse_in_every_offset_form() {
        let expected = parse_datetime("2026-11-20T15:04:05Z").unwrap();
        for form in [
            "2026-11-20T15:04:05.000Z",
            "2026-11-20T15:04:05.000+0000",
            "2026-11-20T15:04:05+00:00",
            "2026-11-20T17:04:05.000+0200",
            " 2026-11-20T10:04:05-05:00 ",
        ] {
            assert_eq!(parse_datetime(form), Some(expected), "{form}");
        }
        assert_eq!(parse_datetime("2026-11-20"), None);
    }

    #[test]
    fn an_unreadable_date_is_an_error_naming_the_notification() {
        let n = notification(&[("LastModifiedDate", Some("yesterday"))]);
        let err = to_events(Uuid::nil(), &message(n), now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "notification 1: LastModifiedDate \"yesterday\" is not a Salesforce date-time"
        );
    }
}
