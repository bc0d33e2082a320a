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
