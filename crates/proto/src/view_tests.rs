use std::collections::BTreeMap;

use super::*;
use crate::v1::{ChangeType, CrmUser};

fn text(s: &str) -> FieldValue {
    FieldValue {
        kind: Some(Kind::Text(s.to_owned())),
    }
}

fn number(s: &str) -> FieldValue {
    FieldValue {
        kind: Some(Kind::Number(s.to_owned())),
    }
}

/// `number` as a length-delimited field of `payload` (the state view's tests use it too).
pub(super) fn len_field(number: u8, payload: &[u8]) -> Vec<u8> {
    assert!(number < 16 && payload.len() < 128);
    let mut out = vec![(number << 3) | 2, payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

fn entry(name: &str, value: &FieldValue) -> Vec<u8> {
    let mut e = len_field(1, name.as_bytes());
    e.extend(len_field(2, &value.encode_to_vec()));
    len_field(7, &e)
}

fn event() -> CrmEvent {
    CrmEvent {
        event_id: "e-1".into(),
        integration_id: "i-1".into(),
        crm: 1,
        object_type: "Opportunity".into(),
        record_id: "006A".into(),
        change_type: ChangeType::Updated as i32,
        fields: [
            ("Amount", number("1200.50")),
            (
                "IsWon",
                FieldValue {
                    kind: Some(Kind::Boolean(true)),
                },
            ),
            ("Name", text("Acme — 40 licenses")),
            (
                "NextStep",
                FieldValue {
                    kind: Some(Kind::NullValue(true)),
                },
            ),
            ("Unset", FieldValue::default()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        previous_fields: [("Amount".to_owned(), number("900"))].into(),
        owner: Some(CrmUser {
            crm_user_id: "005A".into(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
        }),
        occurred_at: Some(crate::Timestamp {
            seconds: 1,
            nanos: 2,
        }),
        full_snapshot: true,
        ..Default::default()
    }
}

/// What the view says, as prost's own decoding of the same bytes would have it.
fn as_prost_would(view: EventView<'_>) -> CrmEvent {
    assert!(view.event.fields.is_empty(), "the fields stay in the bytes");
    assert!(
        view.event.previous_fields.is_empty(),
        "so do the previous values"
    );
    let fields: BTreeMap<String, FieldValue> = view
        .fields
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.to_value()))
        .collect();
    assert_eq!(fields.len(), view.fields.len(), "one entry per name");
    let previous_fields: BTreeMap<String, FieldValue> = view
        .previous
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.to_value()))
        .collect();
    assert_eq!(
        previous_fields.len(),
        view.previous.len(),
        "one entry per name"
    );
    for (name, value) in &previous_fields {
        assert_eq!(
            view.previous(name).map(ValueRef::to_value).as_ref(),
            Some(value)
        );
    }
    CrmEvent {
        fields,
        previous_fields,
        ..view.event
    }
}

fn assert_same(bytes: &[u8]) {
    let prost = CrmEvent::decode(bytes).unwrap();
    let view = decode_event(bytes).unwrap();
    assert!(
        view.fields.is_sorted_by(|a, b| a.0 < b.0) && view.previous.is_sorted_by(|a, b| a.0 < b.0),
        "{:?} {:?}",
        view.fields,
        view.previous
    );
    assert_eq!(as_prost_would(view), prost);
}

#[test]
fn an_event_decodes_to_what_prost_decodes() {
    assert_same(&event().encode_to_vec());
    assert_same(&CrmEvent::default().encode_to_vec());
    let view_bytes = event().encode_to_vec();
    let view = decode_event(&view_bytes).unwrap();
    assert_eq!(view.fields[0], ("Amount", ValueRef::Number("1200.50")));
    assert_eq!(view.fields[3], ("NextStep", ValueRef::Null(true)));
    assert_eq!(view.fields[4], ("Unset", ValueRef::Unset));
}

#[test]
fn fields_out_of_order_or_sent_twice_come_out_as_prost_has_them() {
    let mut bytes = CrmEvent {
        fields: BTreeMap::new(),
        ..event()
    }
    .encode_to_vec();
    let mut unsorted = bytes.clone();
    for (name, value) in [("Name", "b"), ("Amount", "1"), ("Close", "x")] {
        unsorted.extend(entry(name, &text(value)));
    }
    assert_same(&unsorted);
    // Another writer's order, a name twice (the last counts), and an entry after other fields.
    for (name, value) in [
        ("Name", "b"),
        ("Amount", "1"),
        ("Name", "c"),
        ("Close", "x"),
    ] {
        bytes.extend(entry(name, &text(value)));
    }
    bytes.extend(len_field(4, b"Lead"));
    bytes.extend(entry("Amount", &number("2")));
    assert_same(&bytes);
    let view = decode_event(&bytes).unwrap();
    assert_eq!(
        view.fields,
        vec![
            ("Amount", ValueRef::Number("2")),
            ("Close", ValueRef::Text("x")),
            ("Name", ValueRef::Text("c")),
        ]
    );
    assert_eq!(view.event.object_type, "Lead");
}

#[test]
fn entries_in_parts_empty_or_with_unknown_fields_come_out_as_prost_has_them() {
    // A value sent in two parts merges (the last kind wins); unknown fields are skipped at
    // every level; an entry without key or value is the empty name with an empty value.
    let mut parts = len_field(1, b"Stage");
    parts.extend(len_field(2, &text("Open").encode_to_vec()));
    parts.extend([0x18, 0x05]); // unknown field 3, a varint
    parts.extend(len_field(2, &[0x20, 0x01])); // the boolean kind, in a second part
    let mut bytes = len_field(7, &parts);
    let mut value = text("x").encode_to_vec();
    value.extend([0x2d, 1, 2, 3, 4]); // unknown field 5, fixed32
    bytes.extend(len_field(
        7,
        &[len_field(1, b"Kept"), len_field(2, &value)].concat(),
    ));
    bytes.extend(len_field(7, &[]));
    bytes.extend([0xa1, 0x01, 1, 2, 3, 4, 5, 6, 7, 8]); // unknown field 20, fixed64
    // Unknown field 17 as a group holding a varint and a nested group (field 2).
    bytes.extend([
        0x8b, 0x01, 0x08, 0x01, 0x13, 0x0a, 0x01, b'x', 0x14, 0x8c, 0x01,
    ]);
    assert_same(&bytes);
    let view = decode_event(&bytes).unwrap();
    assert_eq!(
        view.fields,
        vec![
            ("", ValueRef::Unset),
            ("Kept", ValueRef::Text("x")),
            ("Stage", ValueRef::Boolean(true)),
        ]
    );
}

#[test]
fn malformed_events_are_refused_as_prost_refuses_them() {
    let good = event().encode_to_vec();
    let mut not_utf8_name = len_field(1, b"\xff\xfe");
    not_utf8_name.extend(len_field(2, &text("x").encode_to_vec()));
    let not_utf8_value = [len_field(1, b"Name"), len_field(2, &len_field(2, b"\xc3"))].concat();
    let wrong_wire = [len_field(1, b"Name"), vec![0x10, 0x01]].concat();
    // A name cut inside a character that the bytes after it complete: the entry as a whole is
    // UTF-8 (\xc3\x82 is "Â", the second byte the tag of an unknown field 16), the name is not.
    let cut_name = [len_field(1, b"N\xc3"), vec![0x82, 0x01, 0x00]].concat();
    let cut_value = [
        len_field(1, b"Name"),
        len_field(
            2,
            &[len_field(2, b"v\xc3"), vec![0x8a, 0x01, 0x00]].concat(),
        ),
    ]
    .concat();
    let cases = [
        good[..good.len() - 1].to_vec(),
        len_field(7, &not_utf8_name),
        len_field(7, &not_utf8_value),
        len_field(7, &cut_name),
        len_field(7, &cut_value),
        len_field(8, &not_utf8_value),
        len_field(7, &wrong_wire),
        vec![0x3a, 0x7f, 0x0a], // an entry longer than what is left
        vec![0x38, 0x01],       // the fields as a varint
        vec![0x0a, 0x80],       // a truncated length
        vec![0x00, 0x01],       // field number 0
        vec![0x3b, 0x3c],       // the fields as a group
        vec![0x8b, 0x01, 0x14], // a group ended by another field
        vec![0x8b, 0x01, 0x08], // a group never ended
        vec![0x8c, 0x01],       // an end of group without its start
    ];
    for bytes in cases {
        assert!(
            CrmEvent::decode(bytes.as_slice()).is_err(),
            "prost accepts {bytes:x?}"
        );
        assert!(decode_event(&bytes).is_err(), "the view accepts {bytes:x?}");
    }
}

#[test]
fn a_value_is_compared_and_copied_as_its_owned_form() {
    for value in [
        text("a"),
        number("1"),
        FieldValue::default(),
        FieldValue {
            kind: Some(Kind::Boolean(false)),
        },
        FieldValue {
            kind: Some(Kind::NullValue(true)),
        },
    ] {
        let view = ValueRef::of(&value);
        assert!(view.is(&value));
        assert_eq!(view.to_value(), value);
    }
    assert!(!ValueRef::Text("1").is(&number("1")));
    assert!(!ValueRef::Unset.is(&text("")));
}

#[test]
fn a_field_entry_is_written_as_prost_writes_a_map_entry() {
    let long = "x".repeat(300);
    let values = [
        FieldValue::default(),
        FieldValue {
            kind: Some(Kind::NullValue(true)),
        },
        FieldValue {
            kind: Some(Kind::Text(String::new())),
        },
        FieldValue {
            kind: Some(Kind::Text(long.clone())),
        },
        number("1200.50"),
        FieldValue {
            kind: Some(Kind::Boolean(false)),
        },
    ];
    for name in ["", "Amount", long.as_str()] {
        for value in &values {
            let event = CrmEvent {
                fields: [(name.to_owned(), value.clone())].into(),
                ..Default::default()
            };
            let mut out = Vec::new();
            put_field_entry(&mut out, FIELDS, name, ValueRef::of(value));
            assert_eq!(out, event.encode_to_vec(), "{name:?} {value:?}");
        }
    }
}

#[test]
fn names_and_values_of_any_length_and_script_come_out_as_prost_has_them() {
    let long = "é".repeat(100);
    let event = CrmEvent {
        fields: [
            ("Name", text("Acme — 40 licenses")),
            ("Émoji 🎉", text("👍")),
            ("Long", text(&long)),
            (long.as_str(), number("1")),
            ("x".repeat(127).as_str(), text(&"y".repeat(127))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        previous_fields: [("Naïve".to_owned(), text(&long))].into(),
        ..Default::default()
    };
    assert_same(&event.encode_to_vec());
}
