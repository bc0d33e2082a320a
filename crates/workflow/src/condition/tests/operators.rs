use super::*;

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
