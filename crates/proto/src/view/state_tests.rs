use super::*;
use crate::v1::field_value::Kind;
use crate::v1::{CrmUser, FieldValue, KnownField, WorkflowMatchState};
use crate::view::tests::len_field;

fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

fn known(kind: Option<Kind>, set_at: Option<Timestamp>) -> KnownField {
    KnownField {
        value: kind.map(|kind| FieldValue { kind: Some(kind) }),
        set_at,
    }
}

/// A state with every kind of field and value prost may have written.
fn state() -> RecordState {
    RecordState {
        integration_id: "i-1".into(),
        crm: 2,
        object_type: "deal".into(),
        record_id: "42".into(),
        fields: [
            (
                "amount",
                known(Some(Kind::Number("1250.50".into())), at(10, 5)),
            ),
            // Times shared by neighbours, and one coming back after another.
            ("amount2", known(Some(Kind::Text("x".into())), at(10, 5))),
            ("closed", known(Some(Kind::Boolean(false)), at(-3, 0))),
            ("closed2", known(Some(Kind::Boolean(true)), at(-3, 0))),
            ("closed3", known(Some(Kind::Text("y".into())), at(10, 5))),
            ("empty", known(Some(Kind::Text(String::new())), None)),
            ("gone", known(Some(Kind::NullValue(true)), at(0, 0))),
            ("nothing", known(None, None)),
            (
                "stage",
                known(Some(Kind::Text("won".into())), at(1 << 40, 999)),
            ),
            (
                "unset",
                KnownField {
                    value: Some(FieldValue { kind: None }),
                    set_at: at(7, 0),
                },
            ),
            ("", known(Some(Kind::Text("nameless".into())), at(1, 0))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        owner: Some(CrmUser {
            crm_user_id: "u-1".into(),
            name: "Ann".into(),
            email: "ann@example.com".into(),
        }),
        deleted: true,
        complete: true,
        matches: vec![WorkflowMatchState {
            workflow_id: "w".into(),
            value: "3".into(),
            activity_date: at(5, 0),
            owner_crm_user_id: "u-1".into(),
        }],
        updated_at: at(20, 0),
        hydration_requested_at: at(21, 0),
        last_event_id: "e-9".into(),
        deleted_at: at(19, 0),
    }
}

fn without_fields(mut state: RecordState) -> RecordState {
    state.fields.clear();
    state
}

#[test]
fn a_state_reads_as_prost_decodes_it_and_writes_back_to_the_same_state() {
    let bytes = state().encode_to_vec();
    let view = decode_state(&bytes).unwrap();
    assert_eq!(view.state, without_fields(state()));
    let original = state();
    let expected: Vec<(&str, KnownRef<'_>)> = original
        .fields
        .iter()
        .map(|(name, k)| {
            let known = KnownRef {
                value: k.value.as_ref().map(ValueRef::of),
                set_at: k.set_at,
            };
            (name.as_str(), known)
        })
        .collect();
    assert_eq!(view.fields, expected);
    let written = encode_state(&view.state, &view.fields);
    assert_eq!(RecordState::decode(written.as_slice()).unwrap(), state());
}

#[test]
fn fields_alone_are_written_byte_for_byte_as_prost_writes_them() {
    let fields_only = RecordState {
        fields: state().fields,
        ..Default::default()
    };
    let bytes = fields_only.encode_to_vec();
    let view = decode_state(&bytes).unwrap();
    assert_eq!(encode_state(&view.state, &view.fields), bytes);
}

#[test]
fn a_value_is_written_byte_for_byte_as_prost_writes_it() {
    let kinds = [
        None,
        Some(Kind::NullValue(true)),
        Some(Kind::NullValue(false)),
        Some(Kind::Text(String::new())),
        Some(Kind::Text("é".repeat(100))),
        Some(Kind::Number("-1e3".into())),
        Some(Kind::Boolean(true)),
        Some(Kind::Boolean(false)),
    ];
    for kind in kinds {
        let value = FieldValue { kind };
        let mut out = Vec::new();
        ValueRef::of(&value).encode_raw(&mut out);
        assert_eq!(out, value.encode_to_vec(), "{value:?}");
        assert_eq!(ValueRef::of(&value).encoded_len(), value.encoded_len());
    }
}

fn entry(name: &str, known: &KnownField) -> Vec<u8> {
    let mut e = len_field(1, name.as_bytes());
    e.extend(len_field(2, &known.encode_to_vec()));
    len_field(5, &e)
}

#[test]
fn fields_out_of_order_sent_twice_or_in_parts_read_as_prost_reads_them() {
    let text = |t: &str| Some(Kind::Text(t.to_owned()));
    let mut bytes = entry("b", &known(text("first"), at(1, 0)));
    bytes.extend(entry("a", &known(text("a"), None)));
    bytes.extend(entry("b", &known(text("second"), at(2, 0))));
    // A known field sent in two parts: the value in one, the time in the other.
    let mut parts = len_field(1, b"c");
    parts.extend(len_field(2, &known(text("c"), None).encode_to_vec()));
    parts.extend(len_field(2, &known(None, at(3, 4)).encode_to_vec()));
    bytes.extend(len_field(5, &parts));
    let prost = RecordState::decode(bytes.as_slice()).unwrap();
    let view = decode_state(&bytes).unwrap();
    let names: Vec<&str> = view.fields.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["a", "b", "c"]);
    for (name, known) in &view.fields {
        let expected = &prost.fields[*name];
        assert_eq!(
            known.value,
            expected.value.as_ref().map(ValueRef::of),
            "{name}"
        );
        assert_eq!(known.set_at, expected.set_at, "{name}");
    }
    let written = encode_state(&view.state, &view.fields);
    assert_eq!(RecordState::decode(written.as_slice()).unwrap(), prost);
}

#[test]
fn malformed_states_are_refused_as_prost_refuses_them() {
    let good = state().encode_to_vec();
    let wrong_time = {
        // set_at (2) sent as a varint rather than a message.
        let mut e = len_field(1, b"x");
        e.extend(len_field(2, &[2 << 3, 1]));
        len_field(5, &e)
    };
    let wrong_seconds = {
        // set_at whose seconds (1) come length-delimited.
        let mut e = len_field(1, b"x");
        e.extend(len_field(2, &len_field(2, &len_field(1, b"1"))));
        len_field(5, &e)
    };
    let not_utf8 = len_field(5, &len_field(1, &[0xff]));
    for (what, bytes) in [
        ("truncated", good[..good.len() - 1].to_vec()),
        ("set_at as a varint", wrong_time),
        ("seconds length-delimited", wrong_seconds),
        ("a name that is not UTF-8", not_utf8),
    ] {
        assert!(decode_state(&bytes).is_err(), "{what}");
        assert!(
            RecordState::decode(bytes.as_slice()).is_err(),
            "prost too: {what}"
        );
    }
}
