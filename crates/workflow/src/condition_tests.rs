use super::*;
use serde_json::json;

fn fv(kind: Kind) -> FieldValue {
    FieldValue { kind: Some(kind) }
}

fn text(s: &str) -> Kind {
    Kind::Text(s.to_owned())
}

fn fields(pairs: &[(&str, Kind)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), fv(v.clone())))
        .collect()
}

fn cond(v: Value) -> Condition {
    Condition::from_json(&v).unwrap_or_else(|e| panic!("{v}: {e}"))
}

use Verdict::{Match as M, NoMatch as N, TypeMismatch as T, Unknown as U};

/// An Opportunity as Salesforce sends it (everything is text), plus a few typed values.
fn opportunity() -> Fields {
    fields(&[
        ("StageName", text("Closed Won")),
        ("Amount", text("1250.50")),
        ("Discount", Kind::Number("0.3".into())),
        ("IsWon", text("true")),
        ("IsPrivate", Kind::Boolean(false)),
        ("Name", text("Ærø Shipping - 200 licenses")),
        ("City", text("STRASSE")),
        ("Type", text("New Business")),
        ("CloseDate", text("2026-11-20")),
        ("LastActivity", text("2026-11-25T23:30:00.000-0500")),
        ("CreatedDate", text("2026-11-01T09:00:00.000Z")),
        ("HsCloseDate", Kind::Number("1763596800000".into())),
        ("Description", Kind::NullValue(true)),
        ("NextStep", text("   ")),
    ])
}

#[test]
fn every_operator_and_type() {
    let r = opportunity();
    let cases: Vec<(Value, Verdict)> = vec![
        // eq / ne on text: case-insensitive by default, optionally exact.
        (
            json!({"field": "StageName", "op": "eq", "value": "closed won"}),
            M,
        ),
        (
            json!({"field": "StageName", "op": "eq", "value": "closed won", "case_sensitive": true}),
            N,
        ),
        (
            json!({"field": "StageName", "op": "eq", "value": "Closed Won", "case_sensitive": true}),
            M,
        ),
        (
            json!({"field": "StageName", "op": "ne", "value": "Closed Lost"}),
            M,
        ),
        (
            json!({"field": "StageName", "op": "ne", "value": "CLOSED WON"}),
            N,
        ),
        // Unicode: full case folding (ß = ss) and composed/decomposed forms.
        (
            json!({"field": "Name", "op": "eq", "value": "ærø shipping - 200 LICENSES"}),
            M,
        ),
        (json!({"field": "City", "op": "eq", "value": "straße"}), M),
        (
            json!({"field": "City", "op": "eq", "value": "straße", "case_sensitive": true}),
            N,
        ),
        (
            json!({"field": "Name", "op": "starts_with", "value": "ÆRØ"}),
            M,
        ),
        // in / not_in.
        (
            json!({"field": "Type", "op": "in", "value": ["Existing Business", "new business"]}),
            M,
        ),
        (
            json!({"field": "Type", "op": "in", "value": ["Existing Business"]}),
            N,
        ),
        (
            json!({"field": "Type", "op": "not_in", "value": ["Existing Business"]}),
            M,
        ),
        (
            json!({"field": "Type", "op": "not_in", "value": ["NEW BUSINESS"]}),
            N,
        ),
        (
            json!({"field": "Amount", "op": "in", "value": [100, 1250.5]}),
            M,
        ),
        // contains / starts_with.
        (
            json!({"field": "Name", "op": "contains", "value": "LICENSES"}),
            M,
        ),
        (
            json!({"field": "Name", "op": "contains", "value": "LICENSES", "case_sensitive": true}),
            N,
        ),
        (
            json!({"field": "Name", "op": "contains", "value": "seats"}),
            N,
        ),
        (
            json!({"field": "Type", "op": "starts_with", "value": "new"}),
            M,
        ),
        (
            json!({"field": "Type", "op": "starts_with", "value": "business"}),
            N,
        ),
        // Numbers: exact decimals, scale does not matter.
        (json!({"field": "Amount", "op": "gte", "value": 1250.5}), M),
        (json!({"field": "Amount", "op": "gt", "value": 1250.5}), N),
        (json!({"field": "Amount", "op": "lt", "value": 2000}), M),
        (json!({"field": "Amount", "op": "lte", "value": 1250.49}), N),
        (
            json!({"field": "Amount", "op": "eq", "value": "1250.500", "type": "number"}),
            M,
        ),
        (json!({"field": "Amount", "op": "ne", "value": 1250.5}), N),
        (json!({"field": "Discount", "op": "eq", "value": 0.3}), M),
        // Booleans from text or typed values.
        (json!({"field": "IsWon", "op": "eq", "value": true}), M),
        (json!({"field": "IsWon", "op": "ne", "value": true}), N),
        (json!({"field": "IsPrivate", "op": "eq", "value": false}), M),
        (
            json!({"field": "IsPrivate", "op": "eq", "value": "false", "type": "boolean"}),
            M,
        ),
        // Dates: a date-only field, a date literal (inferred for orderings or explicit).
        (
            json!({"field": "CloseDate", "op": "gte", "value": "2026-11-20"}),
            M,
        ),
        (
            json!({"field": "CloseDate", "op": "gt", "value": "2026-11-20"}),
            N,
        ),
        (
            json!({"field": "CloseDate", "op": "eq", "value": "2026-11-20", "type": "date"}),
            M,
        ),
        (
            json!({"field": "CloseDate", "op": "lt", "value": "2026-11-20T00:00:01Z"}),
            M,
        ),
        (
            json!({"field": "CloseDate", "op": "gte", "value": "2026-11-20T00:00:00Z"}),
            M,
        ),
        // Epoch milliseconds (HubSpot): 1763596800000 = 2025-11-20T00:00:00Z.
        (
            json!({"field": "HsCloseDate", "op": "eq", "value": "2025-11-20", "type": "date"}),
            M,
        ),
        (
            json!({"field": "HsCloseDate", "op": "lt", "value": "2025-11-20T00:00:00.001Z"}),
            M,
        ),
        (
            json!({"field": "CreatedDate", "op": "eq", "value": "2026-11-01T10:00:00+01:00", "type": "datetime"}),
            M,
        ),
        (
            json!({"field": "CreatedDate", "op": "lt", "value": "2026-11-01T09:00:00.001Z"}),
            M,
        ),
        // Empty (null, blank) fields: equal nothing, differ from everything.
        (json!({"field": "Description", "op": "eq", "value": "x"}), N),
        (json!({"field": "Description", "op": "ne", "value": "x"}), M),
        (
            json!({"field": "Description", "op": "in", "value": ["x"]}),
            N,
        ),
        (
            json!({"field": "Description", "op": "not_in", "value": ["x"]}),
            M,
        ),
        (json!({"field": "Description", "op": "gt", "value": 0}), N),
        (
            json!({"field": "Description", "op": "contains", "value": "x"}),
            N,
        ),
        (json!({"field": "Description", "op": "is_empty"}), M),
        (json!({"field": "NextStep", "op": "is_empty"}), M),
        (json!({"field": "NextStep", "op": "eq", "value": null}), M),
        (json!({"field": "NextStep", "op": "eq", "value": ""}), M),
        (json!({"field": "StageName", "op": "is_empty"}), N),
        (json!({"field": "StageName", "op": "is_not_empty"}), M),
        (json!({"field": "StageName", "op": "ne", "value": null}), M),
        (json!({"field": "Description", "op": "is_not_empty"}), N),
        // Missing fields are unknown, except to emptiness tests.
        (json!({"field": "Missing", "op": "eq", "value": "x"}), U),
        (json!({"field": "Missing", "op": "ne", "value": "x"}), U),
        (
            json!({"field": "Missing", "op": "not_in", "value": ["x"]}),
            U,
        ),
        (json!({"field": "Missing", "op": "gte", "value": 1}), U),
        (json!({"field": "Missing", "op": "is_empty"}), M),
        (json!({"field": "Missing", "op": "is_not_empty"}), N),
        (json!({"field": "Missing", "op": "eq", "value": null}), M),
        // Type mismatches: the field cannot be read as the literal's type.
        (json!({"field": "StageName", "op": "gt", "value": 3}), T),
        (json!({"field": "StageName", "op": "eq", "value": 3}), T),
        (json!({"field": "Name", "op": "eq", "value": true}), T),
        (
            json!({"field": "Name", "op": "gte", "value": "2026-01-01"}),
            T,
        ),
        (json!({"field": "IsPrivate", "op": "eq", "value": 1}), T),
        // A number field compared as text reads its digits.
        (json!({"field": "Discount", "op": "eq", "value": "0.3"}), M),
    ];
    for (c, expected) in cases {
        assert_eq!(cond(c.clone()).evaluate(&r), expected, "{c}");
    }
}

#[test]
fn money_is_exact() {
    // 0.1 + 0.2 in binary floating point is 0.30000000000000004; CRMs send the decimal digits.
    let r = fields(&[
        ("Amount", Kind::Number("0.3".into())),
        ("Big", text("12345678901234567890.12")),
    ]);
    assert_eq!(
        cond(json!({"field": "Amount", "op": "eq", "value": 0.3})).evaluate(&r),
        M
    );
    assert_eq!(
        cond(json!({"field": "Amount", "op": "gt", "value": 0.30000000000000004})).evaluate(&r),
        N
    );
    assert_eq!(
        cond(json!({"field": "Big", "op": "eq", "value": "12345678901234567890.12", "type": "number"}))
            .evaluate(&r),
        M
    );
    assert_eq!(
        cond(json!({"field": "Big", "op": "gt", "value": "12345678901234567890.11", "type": "number"}))
            .evaluate(&r),
        M
    );
}

#[test]
fn time_zones_around_midnight() {
    // 23:30 at UTC-5 on the 25th is 04:30 UTC on the 26th: its date is the 26th.
    let r = fields(&[
        ("Late", text("2026-11-25T23:30:00.000-0500")),
        ("Early", text("2026-11-26T00:30:00+01:00")),
        ("Naive", text("2026-11-25T23:59:59")),
        ("Day", text("2026-11-26")),
    ]);
    let d = |field: &str, op: &str, value: &str| {
        cond(json!({"field": field, "op": op, "value": value, "type": "date"})).evaluate(&r)
    };
    assert_eq!(d("Late", "eq", "2026-11-26"), M);
    assert_eq!(d("Late", "eq", "2026-11-25"), N);
    // 00:30 at UTC+1 on the 26th is 23:30 UTC on the 25th.
    assert_eq!(d("Early", "eq", "2026-11-25"), M);
    assert_eq!(d("Early", "lt", "2026-11-26"), M);
    // Without an offset a field is UTC.
    assert_eq!(d("Naive", "eq", "2026-11-25"), M);
    let t = |field: &str, op: &str, value: &str| {
        cond(json!({"field": field, "op": op, "value": value, "type": "datetime"})).evaluate(&r)
    };
    // A date-only field is midnight UTC at the start of its day.
    assert_eq!(t("Day", "eq", "2026-11-26T00:00:00Z"), M);
    assert_eq!(t("Day", "eq", "2026-11-26T01:00:00+01:00"), M);
    assert_eq!(t("Day", "gt", "2026-11-25T23:59:59.999Z"), M);
    assert_eq!(t("Late", "eq", "2026-11-26T04:30:00Z"), M);
    assert_eq!(t("Naive", "lt", "2026-11-26T00:00:00Z"), M);
    assert_eq!(t("Naive", "lt", "2026-11-26T00:00:00+01:00"), N);
}

#[test]
fn groups_combine_three_valued() {
    let r = fields(&[("StageName", text("Closed Won")), ("Amount", text("500"))]);
    let won = json!({"field": "StageName", "op": "eq", "value": "Closed Won"});
    let big = json!({"field": "Amount", "op": "gte", "value": 1000});
    let unknown = json!({"field": "Missing", "op": "eq", "value": "x"});
    let mismatch = json!({"field": "StageName", "op": "gt", "value": 1});
    let all = |items: Vec<&Value>| cond(json!({ "all": items })).evaluate(&r);
    let any = |items: Vec<&Value>| cond(json!({ "any": items })).evaluate(&r);
    assert_eq!(all(vec![&won, &big]), N);
    assert_eq!(any(vec![&won, &big]), M);
    assert_eq!(all(vec![]), M);
    assert_eq!(all(vec![&won, &unknown]), U);
    assert_eq!(
        all(vec![&big, &unknown]),
        N,
        "false wins over unknown in all"
    );
    assert_eq!(
        any(vec![&won, &unknown]),
        M,
        "true wins over unknown in any"
    );
    assert_eq!(any(vec![&big, &unknown]), U);
    assert_eq!(all(vec![&unknown, &mismatch]), T, "a mismatch is reported");
    assert_eq!(any(vec![&mismatch, &unknown]), T);
    assert_eq!(cond(json!({"not": big})).evaluate(&r), M);
    assert_eq!(cond(json!({"not": unknown})).evaluate(&r), U);
    assert_eq!(cond(json!({"not": mismatch})).evaluate(&r), T);
}

fn event(change: ChangeType, now: &[(&str, Kind)], before: &[(&str, Kind)]) -> CrmEvent {
    let mut e = CrmEvent {
        fields: fields(now),
        previous_fields: fields(before),
        ..Default::default()
    };
    e.set_change_type(change);
    e
}

fn on_event(c: &Value, e: &CrmEvent, mode: Mode) -> Verdict {
    cond(c.clone()).evaluate_record(&Record::of_event(e), mode)
}

#[test]
fn changes_use_previous_values() {
    use ChangeType::{Created, Deleted, Updated};
    let changed = json!({"field": "StageName", "op": "changed"});
    let to_won = json!({"field": "StageName", "op": "changed_to", "value": "Closed Won"});
    let from_neg = json!({"field": "StageName", "op": "changed_from", "value": "Negotiation"});
    let amount_changed = json!({"field": "Amount", "op": "changed", "type": "number"});
    let won = text("Closed Won");
    let cases: Vec<(&Value, CrmEvent, Verdict)> = vec![
        // The previous value was sent and differs.
        (
            &changed,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", text("Negotiation"))],
            ),
            M,
        ),
        (
            &to_won,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", text("Negotiation"))],
            ),
            M,
        ),
        (
            &from_neg,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", text("Negotiation"))],
            ),
            M,
        ),
        (
            &from_neg,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", text("Prospecting"))],
            ),
            N,
        ),
        // Sent but equal (ignoring case, as text comparison does): not a change.
        (
            &changed,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", text("closed won"))],
            ),
            N,
        ),
        (
            &to_won,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", won.clone())],
            ),
            N,
        ),
        // Not sent: unknown, unless the current value already rules it out.
        (
            &changed,
            event(Updated, &[("StageName", won.clone())], &[]),
            U,
        ),
        (
            &to_won,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("Amount", text("1"))],
            ),
            U,
        ),
        (
            &to_won,
            event(Updated, &[("StageName", text("Prospecting"))], &[]),
            N,
        ),
        // Changed from empty, and to empty.
        (
            &to_won,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", Kind::NullValue(true))],
            ),
            M,
        ),
        (
            &changed,
            event(
                Updated,
                &[("StageName", Kind::NullValue(true))],
                &[("StageName", won.clone())],
            ),
            M,
        ),
        // Typed: 1000 and 1000.00 are the same amount.
        (
            &amount_changed,
            event(
                Updated,
                &[("Amount", text("1000.00"))],
                &[("Amount", text("1000"))],
            ),
            N,
        ),
        (
            &amount_changed,
            event(
                Updated,
                &[("Amount", text("1000.01"))],
                &[("Amount", text("1000"))],
            ),
            M,
        ),
        (
            &amount_changed,
            event(
                Updated,
                &[("Amount", text("lots"))],
                &[("Amount", text("1000"))],
            ),
            T,
        ),
        // A created record changed every field it has from nothing.
        (
            &changed,
            event(Created, &[("StageName", won.clone())], &[]),
            M,
        ),
        (
            &to_won,
            event(Created, &[("StageName", won.clone())], &[]),
            M,
        ),
        (
            &from_neg,
            event(Created, &[("StageName", won.clone())], &[]),
            N,
        ),
        (&changed, event(Created, &[], &[]), U),
        // A delete knows nothing of changes.
        (
            &changed,
            event(Deleted, &[("StageName", won.clone())], &[]),
            U,
        ),
    ];
    for (c, e, expected) in cases {
        assert_eq!(on_event(c, &e, Mode::Full), expected, "{c} on {e:?}");
    }
}

#[test]
fn the_state_of_a_change_condition_ignores_the_change() {
    let to_won_big = json!({"all": [
        {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
        {"field": "Amount", "op": "gte", "value": 1000}
    ]});
    // Amount edited on a won deal: not a new win, but still won and big (no retraction).
    let edit = event(
        ChangeType::Updated,
        &[("StageName", text("Closed Won")), ("Amount", text("2000"))],
        &[("Amount", text("1500"))],
    );
    // The stage's previous value was not sent: whether it changed is unknown.
    assert_eq!(on_event(&to_won_big, &edit, Mode::Full), U);
    assert_eq!(on_event(&to_won_big, &edit, Mode::State), U);
    // Sent unchanged: definitely not a change, while the state still holds.
    let resent = event(
        ChangeType::Updated,
        &[("StageName", text("Closed Won")), ("Amount", text("2000"))],
        &[("StageName", text("Closed Won")), ("Amount", text("1500"))],
    );
    assert_eq!(on_event(&to_won_big, &resent, Mode::Full), N);
    assert_eq!(on_event(&to_won_big, &resent, Mode::State), U);
    // Stage moved back: definitely no longer satisfied.
    let back = event(
        ChangeType::Updated,
        &[("StageName", text("Negotiation")), ("Amount", text("2000"))],
        &[("StageName", text("Closed Won"))],
    );
    assert_eq!(on_event(&to_won_big, &back, Mode::State), N);
    // Amount dropped below the threshold: no longer satisfied either.
    let small = event(
        ChangeType::Updated,
        &[("StageName", text("Closed Won")), ("Amount", text("10"))],
        &[("Amount", text("2000"))],
    );
    assert_eq!(on_event(&to_won_big, &small, Mode::State), N);
}

#[test]
fn invalid_conditions_point_at_the_offending_part() {
    let cases = [
        (
            json!({"all": [{"field": "A", "op": "like", "value": "x"}]}),
            "conditions/all/0/op: unknown operator `like`",
        ),
        (
            json!({"field": "A", "op": "gt", "value": "x"}),
            "conditions/value:",
        ),
        (json!({"any": []}), "conditions/any:"),
        (
            json!({"field": "", "op": "eq", "value": 1}),
            "conditions/field:",
        ),
        (
            json!({"field": "A", "op": "eq"}),
            "conditions: missing `value`",
        ),
        (
            json!({"not": {"field": "A", "op": "eq", "value": 1, "extra": 1}}),
            "conditions/not/extra: unknown key",
        ),
        (json!([1]), "conditions: expected an object"),
        // A number compared with a date literal, and other type clashes.
        (
            json!({"field": "CloseDate", "op": "gt", "value": 5, "type": "date"}),
            "conditions/value: expected a date literal, got a number",
        ),
        (
            json!({"field": "CloseDate", "op": "gt", "value": "2026-13-45", "type": "date"}),
            "conditions/value: expected a date YYYY-MM-DD",
        ),
        (
            json!({"field": "At", "op": "gt", "value": "2026-11-20T10:00:00", "type": "datetime"}),
            "conditions/value: expected an ISO 8601 date-time with a time zone",
        ),
        (
            json!({"field": "A", "op": "eq", "value": "x", "type": "money"}),
            "conditions/type: unknown type `money`",
        ),
        (
            json!({"field": "A", "op": "gt", "value": true}),
            "conditions/value: operator `gt` compares numbers and dates",
        ),
        (
            json!({"field": "A", "op": "contains", "value": 3}),
            "conditions/value: `contains` compares text",
        ),
        (
            json!({"field": "A", "op": "starts_with", "value": ""}),
            "conditions/value: `starts_with` needs non-empty text",
        ),
        // An empty `in` list, mixed lists, and lists where a list is needed.
        (
            json!({"all": [{"field": "A", "op": "in", "value": []}]}),
            "conditions/all/0/value: an `in` list needs at least one value",
        ),
        (
            json!({"field": "A", "op": "in", "value": ["a", 2]}),
            "conditions/value/1: every value of a list has the same type: expected text, got number",
        ),
        (
            json!({"field": "A", "op": "in", "value": [1, "a"]}),
            "conditions/value/1: every value of a list has the same type: expected number, got text",
        ),
        (
            json!({"field": "A", "op": "not_in", "value": "a"}),
            "conditions/value: `not_in` takes a list",
        ),
        (
            json!({"field": "A", "op": "in", "value": ["a", null]}),
            "conditions/value/1: null cannot be listed",
        ),
        (
            json!({"field": "A", "op": "is_empty", "value": 1}),
            "conditions/value: `is_empty` takes no value",
        ),
        (
            json!({"field": "A", "op": "changed_to", "value": null}),
            "conditions/value: `changed_to` needs a value",
        ),
        (
            json!({"field": "A", "op": "eq", "value": {"x": 1}}),
            "conditions/value: expected a text, number or boolean literal, got an object",
        ),
        (
            json!({"field": "A", "op": "eq", "value": 1, "case_sensitive": "yes"}),
            "conditions/case_sensitive:",
        ),
    ];
    for (c, expected) in cases {
        let e = Condition::from_json(&c).unwrap_err().to_string();
        assert!(e.starts_with(expected), "{c} -> {e}");
    }
}

#[test]
fn json_round_trips_as_written() {
    let c = json!({"all": [
        {"field": "StageName", "op": "eq", "value": "Closed Won", "case_sensitive": true},
        {"not": {"field": "Amount", "op": "lt", "value": 1000.25}},
        {"any": [{"field": "X", "op": "eq", "value": null}, {"field": "Y", "op": "ne", "value": false}]},
        {"field": "Amount", "op": "gte", "value": "1000.50", "type": "number"},
        {"field": "CloseDate", "op": "gte", "value": "2026-01-01"},
        {"field": "Type", "op": "in", "value": ["New Business", "Upsell"]},
        {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
        {"field": "Amount", "op": "changed", "type": "number"},
        {"field": "Description", "op": "is_empty"}
    ]});
    let parsed = cond(c.clone());
    assert_eq!(parsed.to_json(), c);
    assert_eq!(Condition::from_json(&parsed.to_json()).unwrap(), parsed);
    assert_eq!(parsed.leaf_count(), 10);
    assert!(parsed.uses_changes());
}

#[test]
fn conditions_stored_before_typed_literals_still_parse_the_same() {
    // The forms the first version wrote: groups, eq/ne/gt/gte/lt/lte, number/text/bool/null.
    let stored = json!({"all": [
        {"field": "StageName", "op": "eq", "value": "Closed Won"},
        {"field": "Amount", "op": "gte", "value": 1000},
        {"field": "IsWon", "op": "ne", "value": false},
        {"field": "Lost", "op": "eq", "value": null}
    ]});
    let c = cond(stored.clone());
    assert_eq!(c.to_json(), stored);
    let r = fields(&[
        ("StageName", text("closed won")),
        ("Amount", text("1000.00")),
        ("IsWon", text("true")),
    ]);
    assert_eq!(c.evaluate(&r), M);
}

#[test]
fn the_readme_examples_are_valid_conditions() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("## Workflows").unwrap();
    let end = start
        + readme[start..]
            .find("\n## ")
            .unwrap_or(readme.len() - start);
    let section = &readme[start..end];
    let blocks: Vec<&str> = section
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 4, "{blocks:?}");
    for block in blocks {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(block).unwrap();
        let conditions: Value = serde_json::to_value(&doc["conditions"]).unwrap();
        Condition::from_json(&conditions).unwrap_or_else(|e| panic!("{block}: {e}"));
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const FIELDS: [&str; 5] = ["StageName", "Amount", "CloseDate", "IsWon", "Missing"];

    fn field_value() -> impl Strategy<Value = Option<Kind>> {
        prop_oneof![
            Just(None),
            Just(Some(Kind::NullValue(true))),
            Just(Some(text(""))),
            prop::sample::select(vec![
                "Closed Won",
                "closed won",
                "Prospecting",
                "STRASSE",
                "straße",
                "x"
            ])
            .prop_map(|s| Some(text(s))),
            (-5000i64..5000, 0u32..3)
                .prop_map(|(n, scale)| { Some(Kind::Number(Decimal::new(n, scale).to_string())) }),
            any::<bool>().prop_map(|b| Some(Kind::Boolean(b))),
            prop::sample::select(vec![
                "2026-11-20",
                "2026-11-25T23:30:00-05:00",
                "1763596800000"
            ])
            .prop_map(|s| Some(text(s))),
        ]
    }

    fn record() -> impl Strategy<Value = (Fields, Fields)> {
        (
            prop::collection::vec(field_value(), FIELDS.len()),
            prop::collection::vec(field_value(), FIELDS.len()),
        )
            .prop_map(|(now, before)| {
                let build = |values: Vec<Option<Kind>>| -> Fields {
                    FIELDS
                        .iter()
                        .zip(values)
                        .filter_map(|(f, v)| v.map(|v| (f.to_string(), fv(v))))
                        .collect()
                };
                (build(now), build(before))
            })
    }

    fn literal_json() -> impl Strategy<Value = Value> {
        prop_oneof![
            prop::sample::select(vec!["Closed Won", "prospecting", "strasse", "x"])
                .prop_map(|s| json!(s)),
            (-5000i64..5000).prop_map(|n| json!(n)),
            any::<bool>().prop_map(|b| json!(b)),
            Just(json!("2026-11-20")),
        ]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        let ops = vec![
            "eq",
            "ne",
            "in",
            "not_in",
            "contains",
            "starts_with",
            "gt",
            "gte",
            "lt",
            "lte",
            "is_empty",
            "is_not_empty",
            "changed",
            "changed_to",
            "changed_from",
        ];
        (
            prop::sample::select(FIELDS.to_vec()),
            prop::sample::select(ops),
            literal_json(),
            any::<bool>(),
        )
            .prop_filter_map("valid leaf", |(field, op, value, case_sensitive)| {
                let mut leaf = json!({"field": field, "op": op});
                if case_sensitive {
                    leaf["case_sensitive"] = json!(true);
                }
                match op {
                    "is_empty" | "is_not_empty" | "changed" => {}
                    "in" | "not_in" => leaf["value"] = json!([value]),
                    _ => leaf["value"] = value,
                }
                Condition::from_json(&leaf).ok().map(|_| leaf)
            })
    }

    fn condition() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(|c| json!({"all": c})),
                prop::collection::vec(inner.clone(), 1..3).prop_map(|c| json!({"any": c})),
                inner.prop_map(|c| json!({"not": c})),
            ]
        })
    }

    fn updated(now: Fields, before: Fields) -> CrmEvent {
        let mut e = CrmEvent {
            fields: now,
            previous_fields: before,
            ..Default::default()
        };
        e.set_change_type(ChangeType::Updated);
        e
    }

    proptest! {
        #[test]
        fn not_never_matches_together_with_its_condition(c in condition(), (now, before) in record()) {
            let e = updated(now, before);
            let r = Record::of_event(&e);
            for mode in [Mode::Full, Mode::State] {
                let plain = cond(c.clone()).evaluate_record(&r, mode);
                let negated = cond(json!({"not": c})).evaluate_record(&r, mode);
                prop_assert!(!(plain == Verdict::Match && negated == Verdict::Match));
                prop_assert_eq!(negated, plain.not());
            }
        }

        #[test]
        fn a_group_of_one_is_the_condition(c in condition(), (now, before) in record()) {
            let e = updated(now, before);
            let r = Record::of_event(&e);
            let plain = cond(c.clone()).evaluate_record(&r, Mode::Full);
            prop_assert_eq!(cond(json!({"any": [c.clone()]})).evaluate_record(&r, Mode::Full), plain);
            prop_assert_eq!(cond(json!({"all": [c.clone()]})).evaluate_record(&r, Mode::Full), plain);
            prop_assert_eq!(cond(json!({"not": {"not": c}})).evaluate_record(&r, Mode::Full), plain);
        }

        #[test]
        fn de_morgan_holds(a in condition(), b in condition(), (now, before) in record()) {
            let e = updated(now, before);
            let r = Record::of_event(&e);
            let left = cond(json!({"not": {"all": [a.clone(), b.clone()]}})).evaluate_record(&r, Mode::Full);
            let right = cond(json!({"any": [{"not": a}, {"not": b}]})).evaluate_record(&r, Mode::Full);
            prop_assert_eq!(left, right);
        }

        #[test]
        fn a_match_is_never_a_retraction(c in condition(), (now, before) in record()) {
            // The state of a matching record is never definitely false.
            let e = updated(now, before);
            let r = Record::of_event(&e);
            let parsed = cond(c);
            if parsed.evaluate_record(&r, Mode::Full) == Verdict::Match {
                prop_assert_ne!(parsed.evaluate_record(&r, Mode::State), Verdict::NoMatch);
            }
        }

        #[test]
        fn negated_operators_are_negations(field in prop::sample::select(FIELDS.to_vec()), value in literal_json(), (now, _) in record()) {
            let pairs = [("eq", "ne", value.clone()), ("in", "not_in", json!([value]))];
            for (op, negated, value) in pairs {
                let plain = json!({"field": field, "op": op, "value": value});
                if Condition::from_json(&plain).is_err() { continue; }
                let other = json!({"field": field, "op": negated, "value": value});
                prop_assert_eq!(cond(other).evaluate(&now), cond(json!({"not": plain})).evaluate(&now));
            }
        }

        #[test]
        fn stored_json_round_trips(c in condition()) {
            let parsed = cond(c.clone());
            prop_assert_eq!(parsed.to_json(), c);
        }
    }
}
